// Checks Kubernetes objects (a JSON array, as test_deploy_files.py writes it
// from `kubectl kustomize`) against the object schemas of the npm packages
// kubernetes-models and @kubernetes-models/prometheus-operator, two ways:
//   - each package's runtime validate(): required fields, types, formats,
//     enums (it lets unknown fields through);
//   - the same packages' TypeScript declarations, by compiling each object as
//     a typed literal with the typescript package: a field the schema does
//     not name ("replicaz", "imagePullPolicyy") is an excess property, which
//     the compiler refuses at any depth.
// Usage: node k8s_schema_check.mjs NODE_MODULES OBJECTS.json
// Prints one line per object ("ok KIND/NAME" or the errors) and exits 1 when
// any object is refused, 2 when it cannot run.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [modules, objectsFile] = process.argv.slice(2);
if (!modules || !objectsFile) {
  console.error("usage: node k8s_schema_check.mjs NODE_MODULES OBJECTS.json");
  process.exit(2);
}
for (const pkg of ["kubernetes-models", "@kubernetes-models/prometheus-operator", "typescript"]) {
  if (!fs.existsSync(path.join(modules, pkg, "package.json"))) {
    console.error(`npm package ${pkg} is missing from ${modules} (./run setup installs it)`);
    process.exit(2);
  }
}

// The module that declares an apiVersion/kind, as a path without extension.
function modelPath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return path.join(modules, "@kubernetes-models/prometheus-operator", group, version, kind);
  }
  return path.join(modules, "kubernetes-models", group, version, kind);
}

const objects = JSON.parse(fs.readFileSync(objectsFile, "utf8"));
const failures = new Map();  // index -> messages
const fail = (i, msg) => failures.set(i, [...(failures.get(i) || []), msg]);
const label = (o) => `${o?.kind}/${o?.metadata?.name}`;

const tsLines = [];
for (const [i, o] of objects.entries()) {
  const base = modelPath(String(o.apiVersion), String(o.kind));
  if (!fs.existsSync(base + ".js")) {
    fail(i, `no schema for apiVersion ${o.apiVersion}, kind ${o.kind}`);
    continue;
  }
  const mod = await import(pathToFileURL(base + ".js").href);
  const Model = mod[o.kind];
  try {
    new Model(o).validate();
  } catch (e) {
    fail(i, `schema: ${e.message}`);
  }
  tsLines.push(`import type { I${o.kind} as T${i} } from ${JSON.stringify(base + ".js")};`);
  tsLines.push(`export const object${i}: T${i} = ${JSON.stringify(o, null, 1)};`);
}

if (tsLines.length) {
  const ts = createRequire(path.join(modules, "noop.js"))("typescript");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lathe-k8s-check-"));
  const file = path.join(dir, "objects.ts");
  fs.writeFileSync(file, tsLines.join("\n") + "\n");
  const program = ts.createProgram([file], {
    noEmit: true, strict: true, skipLibCheck: true, types: [],
    module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler,
    target: ts.ScriptTarget.ES2022,
  });
  const source = program.getSourceFile(file);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const text = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
    if (d.file !== source) {
      console.error(`cannot check: ${text}`);
      process.exit(2);
    }
    // The object a diagnostic is in: the nearest `objectN` declared above it.
    const before = source.text.slice(0, d.start);
    const m = [...before.matchAll(/export const object(\d+):/g)].pop();
    const i = m ? Number(m[1]) : -1;
    const line = source.getLineAndCharacterOfPosition(d.start).line;
    const first = m ? source.getLineAndCharacterOfPosition(m.index).line : 0;
    fail(i, `fields: ${text} (line ${line - first + 1} of the object as JSON)`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

for (const [i, o] of objects.entries()) {
  if (failures.has(i)) {
    console.log(`REFUSED ${label(o)}`);
    for (const msg of failures.get(i)) console.log(`  ${msg}`);
  } else {
    console.log(`ok ${label(o)}`);
  }
}
if (failures.has(-1)) for (const msg of failures.get(-1)) console.log(msg);
process.exit(failures.size ? 1 : 0);
