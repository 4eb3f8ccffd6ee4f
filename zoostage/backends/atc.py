"""ATC: ONNX -> .om for Ascend NPUs, the command built and checked without an NPU.

`atc_command` builds the argv of the ModelZoo seed's call:

    atc --framework=5 --model=M.onnx --output=M_bs16 --input_format=NCHW
        --input_shape="image:16,3,320,320" --log=error --soc_version=Ascend310P3
        --precision_mode=allow_fp32_to_fp16 --out_nodes="Reshape_226:0;Softmax_233:0;..."

The seed hard-codes --out_nodes (node names change with the torch version that exported
the ONNX, and ATC then fails with E10016); here `graph_io` reads them from the graph: the
node producing each graph output, in graph-output order, so the .om returns its outputs in
the ONNX model's order. `convert` runs ATC (the command echoed first) in the target's
folder, where ATC leaves its side files; success is exit 0 and the .om present. A failure
is a UserError naming ATC's own error codes (E10016-style) and where its logs are.

Nothing here imports onnx at module level: it is imported by `graph_io` alone.
"""

import os
import re
import shutil
import subprocess
import sys
import time

from zoostage.errors import UserError

ONNX_FRAMEWORK = 5
DEFAULT_PRECISION_MODE = "allow_fp32_to_fp16"
DEFAULT_LOG = "error"

# ATC's error codes: "E10016: ...", "EZ3003: ...", "EC0010: [PID: ...] ...".
_ERROR_CODE = re.compile(r"\b(E[0-9A-Z][0-9]{4})\b:?\s*(.*)")
# A chip row of `npu-smi info`: "| 0       310P3     | OK   | ...".
_NPU_ROW = re.compile(r"^\|\s*\d+\s+([0-9A-Za-z]+)\s+\|\s*[A-Za-z]")

# Hints for error codes whose usual cause is known.
_HINTS = {
    "E10016": "an --out_nodes node is not in the model: re-export the ONNX and compile again",
    "E19010": "an operator of the ONNX model has no ATC parser: export with --opset 11",
    "E10001": "an ATC argument has a value ATC rejects (check --soc_version and --input_shape)",
}


def atc_command(
    onnx_path,
    om_path,
    batch_size,
    soc_version,
    input_name,
    output_nodes,
    precision_mode=DEFAULT_PRECISION_MODE,
    log=DEFAULT_LOG,
    chw=(3, 320, 320),
):
    """The atc argv for a static-batch .om; `om_path` is the output without `.om`."""
    shape = ",".join(str(int(v)) for v in (batch_size, *chw))
    return [
        "atc",
        "--framework=%d" % ONNX_FRAMEWORK,
        "--model=%s" % onnx_path,
        "--output=%s" % om_path,
        "--input_format=NCHW",
        "--input_shape=%s:%s" % (input_name, shape),
        "--log=%s" % log,
        "--soc_version=%s" % soc_version,
        "--precision_mode=%s" % precision_mode,
        "--out_nodes=%s" % ";".join(output_nodes),
    ]


def command_line(argv):
    """The argv as a shell line that can be pasted to rerun it."""
    return " ".join(_quote(arg) for arg in argv)


def _quote(arg):
    # shlex.quote, but keeping `--key=value` readable: only the value is quoted.
    import shlex

    if arg.startswith("--") and "=" in arg:
        key, _, value = arg.partition("=")
        return key + "=" + shlex.quote(value)
    return shlex.quote(arg)


def graph_io(onnx_path):
    """(input name, ["NodeName:index", ...]) of an ONNX model, outputs in graph order."""
    try:
        import onnx
    except ImportError:
        raise UserError("reading the ONNX graph needs the onnx package: pip install onnx") from None
    if not os.path.isfile(onnx_path):
        raise UserError("ONNX model not found: %s (run the export stage first)" % onnx_path)
    graph = onnx.load(onnx_path, load_external_data=False).graph
    initializers = set(init.name for init in graph.initializer)
    inputs = [value.name for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise UserError(
            "%s has %d inputs (%s); ATC conversion here expects one"
            % (onnx_path, len(inputs), ", ".join(inputs))
        )
    producers = {}
    for node in graph.node:
        for index, name in enumerate(node.output):
            producers[name] = (node.name, index)
    nodes = []
    for output in graph.output:
        if output.name not in producers:
            raise UserError(
                "graph output %r of %s is not produced by a node" % (output.name, onnx_path)
            )
        node_name, index = producers[output.name]
        if not node_name:
            raise UserError(
                "the node producing graph output %r of %s has no name, which "
                "--out_nodes needs; re-export the model" % (output.name, onnx_path)
            )
        nodes.append("%s:%d" % (node_name, index))
    return inputs[0], nodes


def soc_version_from_npu_smi(text):
    """The ATC --soc_version of the first chip `npu-smi info` lists ('310P3' -> 'Ascend310P3')."""
    for line in text.splitlines():
        match = _NPU_ROW.match(line.strip())
        if match:
            return "Ascend" + match.group(1)
    return None


def detect_soc_version():
    """--soc_version from `npu-smi info` on this machine; a UserError when unavailable."""
    npu_smi = shutil.which("npu-smi")
    if npu_smi is None:
        raise UserError(
            "cannot tell the Ascend chip: npu-smi not found; pass --soc-version (e.g. Ascend310P3)"
        )
    try:
        text = subprocess.check_output(
            [npu_smi, "info"], stderr=subprocess.STDOUT, universal_newlines=True, timeout=60
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        raise UserError(
            "npu-smi info failed (%s); pass --soc-version (e.g. Ascend310P3)" % error
        ) from None
    soc = soc_version_from_npu_smi(text)
    if soc is None:
        raise UserError("npu-smi info lists no chip; pass --soc-version (e.g. Ascend310P3)")
    return soc


def atc_error_codes(text):
    """[(code, message), ...] of the ATC error codes in its output, first seen first."""
    seen = []
    codes = set()
    for line in text.splitlines():
        match = _ERROR_CODE.search(line)
        if match and match.group(1) not in codes:
            codes.add(match.group(1))
            seen.append((match.group(1), match.group(2).strip()))
    return seen


def log_folder(environ=None):
    """Where ATC writes its detailed logs: ASCEND_PROCESS_LOG_PATH, else ~/ascend/log."""
    environ = os.environ if environ is None else environ
    return environ.get("ASCEND_PROCESS_LOG_PATH") or os.path.join(
        os.path.expanduser("~"), "ascend", "log"
    )


def failure_message(returncode, output, argv, environ=None):
    """The one-line UserError text for a failed ATC run."""
    codes = atc_error_codes(output)
    if codes:
        code, message = codes[0]
        what = "%s: %s" % (code, message[:300]) if message else code
        if len(codes) > 1:
            what += " (also %s)" % ", ".join(c for c, _ in codes[1:])
        hint = _HINTS.get(code)
        if hint:
            what += "; %s" % hint
    else:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        what = "no error code in its output%s" % (": " + lines[-1][:300] if lines else "")
    return "atc failed (exit %s) with %s; logs in %s; command: %s" % (
        returncode,
        what,
        log_folder(environ),
        command_line(argv),
    )


def run_atc(argv, cwd=None, stream=None):
    """Run ATC, echoing the command and its output; (exit code, output text)."""
    stream = sys.stderr if stream is None else stream
    stream.write("+ %s\n" % command_line(argv))
    stream.flush()
    try:
        process = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True
        )
    except OSError as error:
        raise UserError(
            "cannot run atc (%s): source the CANN set_env.sh or run in the atc image" % error
        ) from None
    lines = []
    for line in process.stdout:
        lines.append(line)
        stream.write(line)
    stream.flush()
    process.stdout.close()
    return process.wait(), "".join(lines)


def convert(
    source,
    target,
    input_shape,
    soc_version=None,
    precision_mode=DEFAULT_PRECISION_MODE,
    log=DEFAULT_LOG,
):
    """ONNX `source` -> .om `target` for a static (B, C, H, W) `input_shape`.

    Returns the facts recorded in compile.json: command, soc version, nodes, seconds.
    """
    if shutil.which("atc") is None:
        raise UserError(
            "atc not found on PATH: source /usr/local/Ascend/ascend-toolkit/"
            "set_env.sh, or run in the atc image"
        )
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 4:
        raise UserError("input shape must be B,C,H,W, not %s" % (list(shape),))
    soc_version = soc_version or detect_soc_version()
    input_name, output_nodes = graph_io(source)
    target = os.path.abspath(target)
    stem = target[:-3] if target.endswith(".om") else target
    produced = stem + ".om"
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    argv = atc_command(
        os.path.abspath(source),
        stem,
        shape[0],
        soc_version,
        input_name,
        output_nodes,
        precision_mode=precision_mode,
        log=log,
        chw=shape[1:],
    )
    start = time.time()
    returncode, output = run_atc(argv, cwd=folder)
    seconds = time.time() - start
    if returncode != 0 or not os.path.isfile(produced):
        if returncode == 0:
            raise UserError(
                "atc exited 0 but wrote no %s; logs in %s; command: %s"
                % (produced, log_folder(), command_line(argv))
            )
        raise UserError(failure_message(returncode, output, argv))
    if produced != target:
        os.replace(produced, target)
    return {
        "command": argv,
        "command_line": command_line(argv),
        "soc_version": soc_version,
        "precision_mode": precision_mode,
        "input_name": input_name,
        "out_nodes": output_nodes,
        "input_shape": list(shape),
        "atc_seconds": round(seconds, 3),
    }
