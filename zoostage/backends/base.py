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
        return self.to_host(self.forward(self.to_device(batch)))

    # A call in three parts, so the harness can time the forward alone (the seeds' number)
    # as well as the whole call. A backend with no transfers keeps the identities.
    def to_device(self, batch):
        """The batch where forward() reads it (an NPU tensor; the array itself on CPU)."""
        return batch

    def forward(self, inputs):
        """The model on inputs already on the device; outputs left where they are."""
        raise NotImplementedError

    def to_host(self, outputs):
        """forward()'s outputs as a tuple of numpy arrays."""
        return tuple(outputs)

    def compute_seconds(self):
        """The device's own time for the last call, when the runtime reports one; else None."""
        return None

    def synchronize(self):
        pass

    def close(self):
        pass

    def describe(self):
        """Where this backend runs, for timing records and reports."""
        return {"backend": self.name, "device": str(self.device)}
