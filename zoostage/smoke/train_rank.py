"""One rank of the train smoke check's all-reduce, as training's workers start theirs.

    python -m zoostage.smoke.train_rank RANK WORLD DEVICE PORT RESULT.json

Rank r on npu:DEVICE joins an HCCL group of WORLD ranks on 127.0.0.1:PORT, all-reduces
(sum) a tensor of four (r + 1) on its device, and writes the result to RESULT.json.
"""

import json
import sys


def main(argv):
    import torch
    import torch.distributed as dist
    import torch_npu  # noqa: F401 - gives torch the npu device and the hccl backend

    rank, world, device, port, result = argv
    rank, world = int(rank), int(world)
    torch.npu.set_device(int(device))
    dist.init_process_group(
        "hccl", init_method="tcp://127.0.0.1:%d" % int(port), rank=rank, world_size=world
    )
    try:
        tensor = torch.full((4,), float(rank + 1)).to("npu:%d" % int(device))
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        values = [float(v) for v in tensor.to("cpu").tolist()]
        backend = dist.get_backend()
    finally:
        dist.destroy_process_group()
    with open(result, "w") as handle:
        json.dump({"rank": rank, "result": values, "backend": str(backend)}, handle)


if __name__ == "__main__":
    main(sys.argv[1:])
