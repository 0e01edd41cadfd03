// Node module hooks that let the browser build of libflux (@influxdata/flux-lsp-browser)
// load under plain Node, without --experimental-wasm-modules.
//
// The package is wasm-bindgen output for bundlers: flux-lsp-browser_bg.js starts with
// `import * as wasm from "./flux-lsp-browser_bg.wasm"` and reads `wasm.memory` while it
// is evaluated. Node cannot import a .wasm file, and its entry module
// (flux-lsp-browser.js) imports the .wasm first, which fails with "Cannot access
// 'memory' before initialization". These hooks answer that import with a small module
// that reads the .wasm file, instantiates it with WebAssembly.instantiate, passing the
// package's _bg.js module as the import object, and exports the instance's exports:
// _bg.js then finds them through its own `wasm` import. Nothing in the package is patched.

import { readFile } from "node:fs/promises";

const PACKAGE_DIR = "/@influxdata/flux-lsp-browser/";
const BG_JS = "flux-lsp-browser_bg.js";
const BG_WASM = "flux-lsp-browser_bg.wasm";

function inPackage(url, file) {
  return url.startsWith("file:") && url.includes(PACKAGE_DIR) && url.endsWith(`/${file}`);
}

async function wasmShim(url) {
  const module = await WebAssembly.compile(await readFile(new URL(url)));
  const names = WebAssembly.Module.exports(module).map((entry) => entry.name);
  const lines = [
    `import * as bg from "./${BG_JS}";`,
    `import { readFile } from "node:fs/promises";`,
    `const bytes = await readFile(new URL(import.meta.url));`,
    // The import object names the module the .wasm imports from: the _bg.js glue.
    `const { instance } = await WebAssembly.instantiate(bytes, { "./${BG_JS}": bg });`,
    `const x = instance.exports;`,
    ...names.map((name) => `export const ${name} = x[${JSON.stringify(name)}];`),
  ];
  return lines.join("\n");
}

export async function load(url, context, nextLoad) {
  if (inPackage(url, BG_WASM)) {
    return { format: "module", source: await wasmShim(url), shortCircuit: true };
  }
  if (inPackage(url, BG_JS)) {
    // The package has no "type": "module"; its .js files are ES modules all the same.
    const source = await readFile(new URL(url), "utf8");
    return { format: "module", source, shortCircuit: true };
  }
  return nextLoad(url, context);
}
