// What a TypeScript user writes with @regcred/policy from CommonJS (`require`), checked
// against the package's index.d.cts.
import policy = require("@regcred/policy");

const report: policy.ValidationReport = policy.validate({ kind: "Secret", type: "kubernetes.io/regcredentials" });
const first: policy.Violation | undefined = report.violations[0];
console.log(first?.field, first?.type);
const redacted: policy.Candidate[] = policy.redact(policy.resolve("r.example/app", []).candidates);
console.log(redacted.length, policy.REDACTED);
// @ts-expect-error: convert takes one Secret
policy.convert();
