"""The backend interface the inference harness drives."""


class Backend(object):
    """Compile once, load, then call on float32 NCHW numpy batches.

    Subclasses set `name`, `suffix` (the compiled model's file suffix) and implement
    `compile`, `load` and `run`. `synchronize` waits for queued device work so that a
    timed call measures the work, not its launch (NPU backends need it).
    """

    name = "base"
    suffix = ".bin"
    # The exported model the compile step reads: TorchScript or ONNX.
    source_suffix = None  # None: the same as `suffix`
    # Whether a batch of any size may be fed (False: the compiled model has one batch).
    dynamic_batch = True

    def __init__(self, device="cpu", **options):
        self.device = device
        self.options = options

    def compile(self, source, target, input_shape, precision="fp32", soc_version=None):
        """Turn the exported model at `source` into this backend's model at `target`.

        Returns a dict of facts worth recording (command run, versions, precision).
        """
        raise NotImplementedError

    def load(self, path):
        raise NotImplementedError

    def run(self, batch):
        """Outputs for one float32 (N, C, H, W) batch: a tuple of numpy arrays."""
        raise NotImplementedError

    def synchronize(self):
        pass

    def close(self):
        pass

    def describe(self):
        """Where this backend runs, for timing records and reports."""
        return {"backend": self.name, "device": str(self.device)}
