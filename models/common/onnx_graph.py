"""Read an ONNX model's graph for weight conversion: who produces each tensor, and weights.

Conversion from an exported ONNX model back to a checkpoint must not guess from names
(exporters rename freely): it walks the graph from its outputs, node by node, the way the
network computes, and takes each Conv's weight and bias from the initializers that feed
it. This module gives that walk its steps; the recipe's converter knows the network.

Only parsing happens here (onnx's protobuf reader): nothing in the model is executed.
"""

import numpy as np

from zoostage.errors import UserError


class GraphError(UserError):
    """The ONNX graph is not the network the converter expects; says where and why."""


class Graph(object):
    """An ONNX graph indexed for walking backwards from its outputs.

    - `producer(tensor, op)`: the node that computes `tensor`, checked to be an `op`;
    - `weight(name)`: the float32 array of an initializer, followed through Identity
      nodes (exporters alias a weight used twice through Identity);
    - `attribute(node, name)`: a node attribute as a plain Python value.
    """

    def __init__(self, model, what="the ONNX model"):
        from onnx import numpy_helper

        self.what = what
        graph = model.graph
        self.initializers = dict(
            (tensor.name, numpy_helper.to_array(tensor)) for tensor in graph.initializer
        )
        # Old exporters list initializers among the inputs too: only real inputs count.
        self.inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs = [value.name for value in graph.output]
        self.nodes = list(graph.node)
        self.producers = {}
        for node in self.nodes:
            for name in node.output:
                self.producers[name] = node
        self.used_initializers = set()
        self.visited = set()  # output names of the nodes the walk went through

    def fail(self, message):
        raise GraphError("%s is not the expected network: %s" % (self.what, message))

    def producer(self, tensor, op_type):
        node = self.producers.get(tensor)
        if node is None:
            self.fail("nothing computes %s (expected a %s)" % (tensor, op_type))
        if node.op_type != op_type:
            self.fail("%s comes from a %s node, expected a %s" % (tensor, node.op_type, op_type))
        self.visited.add(tuple(node.output))
        return node

    def unvisited(self, op_type):
        """Nodes of `op_type` the walk never reached (work the conversion would lose)."""
        return [
            n for n in self.nodes if n.op_type == op_type and tuple(n.output) not in self.visited
        ]

    def op_of(self, tensor):
        """The op type that computes `tensor`, or None for a graph input or initializer."""
        node = self.producers.get(tensor)
        return node.op_type if node is not None else None

    def resolve(self, name):
        """The initializer behind `name`, through any chain of Identity nodes."""
        seen = 0
        while name not in self.initializers:
            node = self.producers.get(name)
            if node is None or node.op_type != "Identity" or seen > 16:
                self.fail("%s is not a constant weight" % name)
            name = node.input[0]
            seen += 1
        return name

    def weight(self, name):
        resolved = self.resolve(name)
        self.used_initializers.add(resolved)
        return np.asarray(self.initializers[resolved], dtype=np.float32)

    @staticmethod
    def attribute(node, name, default=None):
        from onnx import helper

        for attribute in node.attribute:
            if attribute.name == name:
                value = helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
        return default


def load_model(data, what="the ONNX model"):
    """Parse ONNX bytes; a file that is not ONNX is a UserError (onnx needed, said how)."""
    try:
        import onnx
    except ImportError:
        raise UserError(
            "converting %s needs the onnx package: pip install onnx (or zoobox's [onnx] "
            "extra)" % what
        ) from None
    try:
        return onnx.load_model_from_string(bytes(data))
    except Exception as error:  # protobuf raises DecodeError and friends
        raise UserError("%s cannot be parsed as ONNX (%s)" % (what, error)) from None
