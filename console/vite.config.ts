/// <reference types="vitest" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The console is served by the gateway at "/"; hashed assets go to dist/assets (cached long).
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "dist",
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      output: {
        manualChunks: {
          antd: ["antd", "@ant-design/icons"],
          editor: ["@uiw/react-codemirror", "@codemirror/legacy-modes/mode/shell", "@codemirror/legacy-modes/mode/powershell", "@codemirror/lang-python"],
        },
      },
    },
  },
  test: {
    environment: "node",
    setupFiles: ["src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
