#!/usr/bin/env node
// Run a Python script on real MicroPython, offline: the npm package @micropython/micropython-webassembly-pyscript
// is MicroPython's own WebAssembly port. The firmware's tests run the board modules here, so a construct only
// CPython accepts fails them.
//
//   npm ci --prefix tools/micropython
//   node tools/micropython/run.mjs [--into DIR] FILE.py ... --run SCRIPT.py [ARG ...]
//
// Every FILE is copied into the interpreter's file system under the current --into folder (default /lib, which is
// on MicroPython's sys.path; --into /lib/pkg makes a package folder). SCRIPT runs as __main__ with sys.argv set to
// [SCRIPT, ARG ...]; its output passes through. Exits with SystemExit's code, 1 on any other Python exception (its
// traceback on stderr), 2 when the arguments or the installation are wrong.
import fs from "node:fs";
import path from "node:path";

const PACKAGE = "@micropython/micropython-webassembly-pyscript";

class UsageError extends Error {}

function parseArgs(argv) {
  const files = []; // [board path, host path]
  let into = "/lib";
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--into") {
      into = argv[++i];
      if (!into || !into.startsWith("/")) throw new UsageError("--into wants an absolute folder, e.g. /lib/pkg");
    } else if (arg === "--run") {
      const script = argv[i + 1];
      if (!script) throw new UsageError("--run wants the script to run");
      return { files, script, args: argv.slice(i + 2) };
    } else if (arg.startsWith("--")) {
      throw new UsageError(`unknown option ${arg}`);
    } else {
      files.push([path.posix.join(into, path.basename(arg)), arg]);
    }
  }
  throw new UsageError("nothing to run: give --run SCRIPT.py");
}

function read(file) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`${file}: cannot read: ${err.message}`);
  }
}

function makedirs(FS, dir) {
  let at = "";
  for (const part of dir.split("/").filter(Boolean)) {
    at += "/" + part;
    if (!FS.analyzePath(at).exists) FS.mkdir(at);
  }
}

// Whole lines to the host's stream: the port hands over one byte at a time.
function lineWriter(stream) {
  let pending = [];
  const write = (bytes) => {
    for (const b of bytes) {
      pending.push(b);
      if (b === 10) {
        stream.write(Buffer.from(pending));
        pending = [];
      }
    }
  };
  write.flush = () => {
    if (pending.length) stream.write(Buffer.from(pending));
    pending = [];
  };
  return write;
}

// Runs the script as __main__ and turns SystemExit into a code the runner exits with; any other exception
// reaches JavaScript as a PythonError carrying MicroPython's traceback.
const LAUNCH = `
import json, sys
sys.argv[:] = json.loads(__run_argv)
__run_exit = 0
try:
    exec(compile(open(__run_board).read(), __run_host, "exec"), {"__name__": "__main__"})
except SystemExit as exc:
    __run_exit = exc.args[0] if exc.args else 0
`;

async function main(argv) {
  const { files, script, args } = parseArgs(argv);
  let loadMicroPython;
  try {
    ({ loadMicroPython } = await import(PACKAGE));
  } catch (err) {
    throw new UsageError(`MicroPython is not installed: run \`npm ci --prefix tools/micropython\` (${err.message})`);
  }
  const stdout = lineWriter(process.stdout);
  const stderr = lineWriter(process.stderr);
  // The port's default heap (1 MiB) grows by itself when a script needs more.
  const mp = await loadMicroPython({ stdout, stderr, linebuffer: false });
  try {
    for (const [board, host] of files) {
      makedirs(mp.FS, path.posix.dirname(board));
      mp.FS.writeFile(board, read(host));
    }
    const board = "/main/" + path.basename(script);
    makedirs(mp.FS, "/main");
    mp.FS.writeFile(board, read(script));
    mp.globals.set("__run_argv", JSON.stringify([script, ...args]));
    mp.globals.set("__run_board", board);
    mp.globals.set("__run_host", script);
    try {
      mp.runPython(LAUNCH);
    } catch (error) {
      if (error.name !== "PythonError") throw error;
      stdout.flush();
      stderr.flush();
      // the launcher's own frame says nothing about the script
      process.stderr.write(error.message.replace(/^ {2}File "<stdin>", line \d+, in <module>\n/m, ""));
      return 1;
    }
    const code = mp.globals.get("__run_exit");
    if (code === null || code === undefined) return 0;
    if (typeof code === "number") return code;
    stdout.flush();
    stderr.flush();
    process.stderr.write(String(code) + "\n"); // sys.exit("message"), as CPython prints it
    return 1;
  } finally {
    stdout.flush();
    stderr.flush();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    // never the stack: it would print the port's minified source line
    console.error(error instanceof UsageError ? error.message : `run.mjs: ${error && error.message}`);
    process.exitCode = 2;
  }
);
