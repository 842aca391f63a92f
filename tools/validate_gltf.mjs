// Validate a .glb/.gltf with the Khronos glTF validator; print the report summary as JSON.
//
// Usage: node tools/validate_gltf.mjs FILE.glb
// Exit code: 0 when the report has zero errors, 1 when it has errors, 2 on bad usage or an
// unreadable file. stdout is one JSON object: {"file", "validatorVersion", "numErrors",
// "numWarnings", "numInfos", "numHints", "messages": [{code, severity, message, pointer}]}.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node tools/validate_gltf.mjs FILE.glb");
    return 2;
  }
  let validator;
  try {
    validator = require("gltf-validator");
  } catch (err) {
    console.error("gltf-validator is not installed: run `npm ci` in the repository root");
    return 2;
  }
  let bytes;
  try {
    bytes = new Uint8Array(readFileSync(file));
  } catch (err) {
    console.error(`cannot read ${file}: ${err.message}`);
    return 2;
  }
  const report = await validator.validateBytes(bytes, {
    uri: basename(file),
    maxIssues: 100,
    writeTimestamp: false,
  });
  const issues = report.issues;
  const severities = ["error", "warning", "info", "hint"];
  const summary = {
    file,
    validatorVersion: report.validatorVersion,
    numErrors: issues.numErrors,
    numWarnings: issues.numWarnings,
    numInfos: issues.numInfos,
    numHints: issues.numHints,
    messages: issues.messages.map((m) => ({
      code: m.code,
      severity: severities[m.severity] ?? String(m.severity),
      message: m.message,
      pointer: m.pointer ?? null,
    })),
  };
  console.log(JSON.stringify(summary));
  return issues.numErrors === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`validator failed: ${err}`);
    process.exit(2);
  },
);
