"""Export a torch module to ONNX for the onnxruntime backend (opset 11, dynamic batch).

The TorchScript-based exporter is used (`dynamo=False` where torch has the choice): it
is the one torch 1.5 / 1.10 have, and it needs no extra package.
"""

import inspect

from zoostage.space import ensure_space_for

OPSET = 11


def export_onnx(module, example, path, input_names, output_names):
    """Write `module` traced on `example` to `path`; batch dimension dynamic."""
    import torch

    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    dynamic = dict((name, {0: "batch"}) for name in list(input_names) + list(output_names))
    ensure_space_for(path, module)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            path,
            opset_version=OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic,
            do_constant_folding=True,
            **kwargs,
        )
    return {"onnx_opset": OPSET}


def run_onnx(path, batch, threads=None):
    """Outputs of the ONNX model at `path` on `batch` (numpy), with onnxruntime on CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    session = onnxruntime.InferenceSession(
        path, sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: batch})
