// What a TypeScript user writes with @regcred/policy (ES modules); `tsc --noEmit` checks
// it against the package's declarations. The @ts-expect-error lines prove that the
// declarations reject wrong use: tsc fails if any of them stops being an error.
import {
  init,
  isPolicyError,
  redact,
  resolve,
  validate,
  validateDocuments,
  type Candidate,
  type FileReport,
  type PolicyConfig,
  type Resolution,
  type SecretManifest,
  type ValidationReport,
} from "@regcred/policy";

await init();

const secret: SecretManifest = {
  apiVersion: "v1",
  kind: "Secret",
  metadata: { name: "quay-robot", namespace: "apps" },
  type: "kubernetes.io/regcredentials",
  stringData: { serverAddress: "quay.io/my-org", username: "robot", password: "example-password" },
};
const config: PolicyConfig = { allowedRegistries: ["quay.io/my-org"], maxValueBytes: 16384 };

const report: ValidationReport = validate(secret, config);
if (!report.valid) {
  for (const { field, type, message } of report.violations) {
    const kind: "FieldValueRequired" | "FieldValueInvalid" | "FieldValueNotSupported"
      | "FieldValueTooLong" | "FieldValueForbidden" | "FieldValueTypeInvalid" = type;
    console.log(`${field}: ${message} (${kind})`);
  }
}
for (const warning of report.warnings) console.log(warning.field, warning.message);

try {
  const resolution: Resolution = resolve("quay.io/my-org/app:1.0", [secret], "cri-o", config);
  const shown: Candidate[] = redact(resolution.candidates);
  for (const { secret: name, matched, authConfig } of shown) {
    const server: string | undefined = authConfig.serverAddress;
    console.log(name, matched, server, authConfig.password);
  }
  resolution.warnings.forEach((line: string) => console.log(line));
} catch (error) {
  if (isPolicyError(error)) {
    const code: string = error.code;
    console.log(code, error.message);
  }
}

const reports: FileReport[] = validateDocuments([secret, null], { file: "secret.yaml" });
for (const entry of reports) {
  if ("skipped" in entry) console.log(entry.file, entry.secret, entry.skipped);
  else console.log(entry.file, entry.secret, entry.valid, entry.violations.length);
}

// @ts-expect-error: not a runtime profile
resolve("quay.io/my-org/app", [secret], "docker");
// @ts-expect-error: the image is a string
resolve(42, [secret]);
// @ts-expect-error: no such policy configuration field
validate(secret, { allowedRegistry: ["x"] });
// @ts-expect-error: a report's `valid` is a boolean
const notANumber: number = report.valid;
void notANumber;
