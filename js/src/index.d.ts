// Types of @regcred/policy. They describe the JSON the policy module answers with
// (policy-wasm/ABI.md), which is also what `regcred validate -o json` and `regcred resolve`
// print. The same file is shipped as index.d.ts (ES modules, browsers) and index.d.cts
// (CommonJS).

/** How the credentials are shaped for the container runtime (`--runtime-profile`). */
export type RuntimeProfile = "containerd" | "cri-o" | "passthrough";

/** Kubernetes field error types (`k8s.io/apimachinery/pkg/util/validation/field`). */
export type FieldErrorType =
  | "FieldValueRequired"
  | "FieldValueInvalid"
  | "FieldValueNotSupported"
  | "FieldValueTooLong"
  | "FieldValueForbidden"
  | "FieldValueTypeInvalid";

/** A broken rule: the Kubernetes field path, its error type, and a message for people. */
export interface Violation {
  /** A Kubernetes field path, such as `data[serverAddress]` or `metadata.name`. */
  field: string;
  type: FieldErrorType;
  message: string;
}

/** Something that is allowed but probably not meant, such as a token CRI-O ignores. */
export interface Warning {
  field: string;
  message: string;
}

/** The verdict on one Secret. */
export interface ValidationReport {
  /** `NAMESPACE/NAME` (`default` when the manifest names no namespace). */
  secret: string;
  valid: boolean;
  violations: Violation[];
  warnings: Warning[];
}

/** The CRI `AuthConfig` (proto3 JSON names); empty fields are left out. */
export interface AuthConfig {
  username?: string;
  password?: string;
  auth?: string;
  serverAddress?: string;
  identityToken?: string;
  registryToken?: string;
}

/** One set of credentials a pull would try. */
export interface Candidate {
  /** The Secret it comes from, `NAMESPACE/NAME`. */
  secret: string;
  /** The `serverAddress` (or docker config key) that matched the image. */
  matched: string;
  authConfig: AuthConfig;
}

/** What `resolve` returns: candidates most specific first, and why Secrets were skipped. */
export interface Resolution {
  candidates: Candidate[];
  /** One line per Secret or docker config entry that was skipped. */
  warnings: string[];
}

/** A site policy (`schemas/policy-config.schema.json`); limits can only be lowered. */
export interface PolicyConfig {
  /** `HOST[:PORT][/PATH]` patterns a Secret's `serverAddress` must fall within. */
  allowedRegistries?: string[] | null;
  /** Largest total of decoded values, in bytes (at most 1048576). */
  maxSecretBytes?: number | null;
  /** Largest decoded value, in bytes (at most 65536). */
  maxValueBytes?: number | null;
}

/** A Secret as written: values are checked by the policy, so anything JSON goes. */
export interface SecretManifest {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    generateName?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [field: string]: unknown;
  };
  type?: string;
  /** Base64 values. */
  data?: Record<string, unknown>;
  /** Plain-text values; a key here wins over the same key in `data`. */
  stringData?: Record<string, unknown>;
  immutable?: boolean;
  [field: string]: unknown;
}

/** Error codes of the policy module (`regcred_types::wire::codes`). */
export type PolicyErrorCode =
  | "bad_request"
  | "too_large"
  | "invalid_image"
  | "invalid_config"
  | "invalid_secret";

/** What the functions throw: an `Error` whose `code` says why; match on the code. */
export interface PolicyError extends Error {
  code: PolicyErrorCode | "invalid_manifest" | "not_initialized";
}

/** Thrown by `validateDocuments` and `secretsOf` for a document that is no object. */
export interface ManifestError extends PolicyError {
  code: "invalid_manifest";
  /** The document's number, from 1. */
  document: number;
}

/** One entry of `regcred validate -o json`: a checked Secret, with the file it came from. */
export interface CheckedReport extends ValidationReport {
  file: string;
}

/** One entry of `regcred validate -o json` for an object that is no credential Secret. */
export interface SkippedReport {
  file: string;
  secret: string;
  /** Why, such as `kind ConfigMap is not a Secret`. */
  skipped: string;
}

export type FileReport = CheckedReport | SkippedReport;

export interface ValidateDocumentsOptions {
  /** The `file` of every entry; `-` (standard input, as the CLI says) when left out. */
  file?: string;
  config?: PolicyConfig;
}

/** Bytes of the module, or (typed loosely, so no DOM types are needed) a `WebAssembly.Module`. */
export type WasmSource = ArrayBuffer | ArrayBufferView | object;

/**
 * What `init` accepts: nothing (the wasm file next to the glue), or its URL (a string or
 * `URL`), a `Response`/`Request` for it, its bytes or a compiled `WebAssembly.Module`.
 */
export type InitInput = { module_or_path: string | WasmSource } | undefined;

/** `"<redacted>"`. */
export declare const REDACTED: "<redacted>";
/** The Secret types `validateDocuments` checks; others are skipped. */
export declare const CREDENTIAL_SECRET_TYPES: readonly [
  "kubernetes.io/regcredentials",
  "kubernetes.io/dockerconfigjson",
  "kubernetes.io/dockercfg",
];

/**
 * Loads the module. Needed once in browsers and bundlers before any other function;
 * in Node.js the module is loaded on import and this resolves at once.
 */
export declare function init(input?: InitInput): Promise<void>;
/** Loads the module from bytes or a compiled module, synchronously. */
export declare function initSync(input?: { module: WasmSource }): void;

/**
 * Validates one Secret.
 * @throws {PolicyError} `bad_request` (not a Secret object), `invalid_config`.
 */
export declare function validate(secret: SecretManifest, config?: PolicyConfig | null): ValidationReport;

/**
 * The credentials a pull of `image` would try, from `secrets` in imagePullSecrets order.
 * The result holds passwords and tokens in clear: `redact` it before showing it.
 * @throws {PolicyError} `bad_request`, `invalid_image`, `invalid_config`.
 */
export declare function resolve(
  image: string,
  secrets: SecretManifest[],
  runtime?: RuntimeProfile | null,
  config?: PolicyConfig | null,
): Resolution;

/**
 * Converts a `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg` Secret into
 * one `kubernetes.io/regcredentials` Secret per registry.
 * @throws {PolicyError} `bad_request`, `invalid_secret`.
 */
export declare function convert(secret: SecretManifest): SecretManifest[];

/** One ABI request as JSON text; the response as JSON text. Never throws for a bad request. */
export declare function evaluate(request: string): string;
/** One ABI request as bytes (need not be UTF-8); the response as UTF-8 JSON bytes. */
export declare function evaluateBytes(request: Uint8Array): Uint8Array;

/** True when `error` is an error of this package (it has a string `code`). */
export declare function isPolicyError(error: unknown): error is PolicyError;

/** Candidates with passwords, `auth` and tokens replaced by `"<redacted>"`, as the CLI prints them. */
export declare function redact(candidates: readonly Candidate[]): Candidate[];

/**
 * The Secrets among parsed manifest documents (one value per YAML or JSON document;
 * `kind: List` items flattened), in order.
 * @throws {ManifestError} for a document that is not an object.
 */
export declare function secretsOf(documents: readonly unknown[]): SecretManifest[];

/**
 * `regcred validate -o json` for parsed manifest documents.
 * @throws {ManifestError} for a document that is not an object, or a Secret whose shape is wrong.
 * @throws {PolicyError} `invalid_config`.
 */
export declare function validateDocuments(
  documents: readonly unknown[],
  options?: ValidateDocumentsOptions,
): FileReport[];
