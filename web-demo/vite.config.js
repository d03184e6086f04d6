import { defineConfig } from "vite";

// Relative asset URLs: livehub serves the built page at `/` and at `/demo/`.
// In `npm run dev`, API and Socket.IO calls go to a livehub on LIVEHUB_URL
// (default http://127.0.0.1:3000) through Vite's proxy, so the page keeps
// using its own origin.
const target = process.env.LIVEHUB_URL || "http://127.0.0.1:3000";

export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    // Everything is self-hosted: no CDN, no external fonts.
    assetsInlineLimit: 0,
  },
  server: {
    proxy: {
      "/api": target,
      "/dev": target,
      "/health": target,
      "/socket.io": { target, ws: true },
    },
  },
});
