// Puts the Socket.IO Admin UI (npm @socket.io/admin-ui, its built ui/dist)
// into dist/admin/, which livehub serves at /admin/. Run after `vite build`
// (which empties dist/). Two changes to its index.html, so that it works on a
// network with no internet: the icon font comes from the @mdi/font package
// instead of a CDN, the Roboto font link is dropped (system fonts instead), and
// the server URL defaults to the page's own origin (the UI asks for one).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const ui = path.join(root, "node_modules/@socket.io/admin-ui/ui/dist");
const mdi = path.join(root, "node_modules/@mdi/font");
const out = path.join(root, "dist/admin");

fs.rmSync(out, { recursive: true, force: true });
fs.cpSync(ui, out, { recursive: true, filter: (src) => !src.endsWith(".map") });
fs.cpSync(path.join(mdi, "css/materialdesignicons.min.css"), path.join(out, "mdi/css/materialdesignicons.min.css"));
fs.cpSync(path.join(mdi, "fonts"), path.join(out, "mdi/fonts"), { recursive: true });

const index = path.join(out, "index.html");
let html = fs.readFileSync(index, "utf8");
const replace = (pattern, by, what) => {
  if (!pattern.test(html)) throw new Error(`admin-ui: ${what} not found in index.html`);
  html = html.replace(pattern, by);
};
replace(/<link rel="stylesheet" href="https:\/\/fonts\.googleapis\.com[^>]*>/, "", "the Roboto link");
replace(/https:\/\/cdn\.jsdelivr\.net\/npm\/@mdi\/font@latest\/css\/materialdesignicons\.min\.css/, "mdi/css/materialdesignicons.min.css", "the icon font link");
replace(
  /<div id="app"><\/div>/,
  '<div id="app"></div><script>localStorage.getItem("server_url")||localStorage.setItem("server_url",location.origin)</script>',
  "the app's mount point",
);
fs.writeFileSync(index, html);
console.log(`admin-ui: ${path.relative(root, out)}/ ready`);
