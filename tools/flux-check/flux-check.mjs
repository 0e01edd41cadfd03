// Semantic check of Flux scripts with libflux, the official Flux parser and type checker
// (@influxdata/flux-lsp-browser, compiled to WebAssembly).
//
// stdin:  {"<name>": "<flux source>", ...}
// stdout: {"libflux": "<package version>",
//          "results": {"<name>": {"valid": bool, "diagnostics": ["line:col: message", ...]}}}
//
// "valid" is Flux(source).is_valid(): the parse plus the semantic analysis (types,
// builtin function signatures, imports) that InfluxDB runs before executing a query.
// "diagnostics" are the language server's messages for the same source, to say why.

import { readFileSync } from "node:fs";

// libflux logs through console; stdout carries only the JSON answer.
for (const level of ["log", "info", "debug", "warn"]) {
  console[level] = (...args) => process.stderr.write(`${args.join(" ")}\n`);
}

const { Flux, Lsp } = await import("./libflux.mjs");

const DIAGNOSTICS_TIMEOUT_MS = 30_000;

function readStdin() {
  return readFileSync(0, "utf8");
}

function uriOf(index) {
  return `file:///query-${index}/query.flux`; // one directory each: one package each
}

async function diagnose(sources) {
  const lsp = new Lsp();
  const pending = new Map(sources.map((_, index) => [uriOf(index), null]));
  let done;
  const allIn = new Promise((resolve) => {
    done = resolve;
  });
  lsp.onMessage((text) => {
    const message = JSON.parse(text);
    if (message.method !== "textDocument/publishDiagnostics") return;
    const { uri, diagnostics } = message.params;
    if (!pending.has(uri)) return;
    pending.set(uri, diagnostics);
    if ([...pending.values()].every((value) => value !== null)) done();
  });
  lsp.run().catch((error) => process.stderr.write(`flux language server stopped: ${error}\n`));
  const send = (message) => lsp.send(JSON.stringify({ jsonrpc: "2.0", ...message }));
  await send({ id: 1, method: "initialize", params: { capabilities: {} } });
  await send({ method: "initialized", params: {} });
  for (const [index, text] of sources.entries()) {
    const textDocument = { uri: uriOf(index), languageId: "flux", version: 1, text };
    await send({ method: "textDocument/didOpen", params: { textDocument } });
  }
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(resolve, DIAGNOSTICS_TIMEOUT_MS);
  });
  await Promise.race([allIn, timeout]);
  clearTimeout(timer);
  return sources.map((_, index) => {
    const diagnostics = pending.get(uriOf(index));
    if (diagnostics === null) return ["(no diagnostics from the language server)"];
    return diagnostics.map(
      (d) => `${d.range.start.line + 1}:${d.range.start.character + 1}: ${d.message}`,
    );
  });
}

const queries = JSON.parse(readStdin());
const names = Object.keys(queries);
const sources = names.map((name) => {
  if (typeof queries[name] !== "string") throw new Error(`query ${name}: not a string`);
  return queries[name];
});
const diagnostics = await diagnose(sources);
const results = {};
for (const [index, name] of names.entries()) {
  const flux = new Flux(sources[index]);
  results[name] = { valid: flux.is_valid(), diagnostics: diagnostics[index] };
  flux.free();
}
const packageJson = new URL(
  "./node_modules/@influxdata/flux-lsp-browser/package.json",
  import.meta.url,
);
const { version } = JSON.parse(readFileSync(packageJson, "utf8"));
process.stdout.write(JSON.stringify({ libflux: version, results }));
process.exit(0); // the language server's run() promise never settles
