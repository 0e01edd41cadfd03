// libflux (the Flux parser and semantic analyzer, from @influxdata/flux-lsp-browser) for Node.
import { register } from "node:module";

register("./libflux-hooks.mjs", import.meta.url);

// The _bg.js glue, not the package entry: importing it first lets the hooks instantiate
// the .wasm before the glue reads the instance's memory.
const libflux = await import("@influxdata/flux-lsp-browser/flux-lsp-browser_bg.js");

export const { Flux, Lsp, parse } = libflux;
