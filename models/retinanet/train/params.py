"""Parameters of the training stage (models.retinanet.train.launch): see zoostage.declare.

The recipe's training parameters are named train_* where the inference recipe already
has the name (train_batch_size sets --batch-size, train_workers --workers...)."""

from models.retinanet.train import nodes, schedule
from zoostage.declare import Param

DEFAULT_SPLIT = "train2017"
MIN_SIZE = 800
MAX_SIZE = 1333
# The seed's test/train_full_{1,8}p.sh: --cfg-options optimizer.lr=0.04 (8 images a device,
# on 1 and on 8 devices); its config: optimizer_config grad_clip=dict(max_norm=10).
SEED_LR = 0.04
SEED_CLIP_GRAD = 10.0

LAUNCH = (
    Param(
        "data",
        help="COCO root: <split>/ and annotations/instances_<split>.json",
        required=True,
    ),
    Param("split", default=DEFAULT_SPLIT, help="image split to train on", recipe="train_split"),
    Param("limit", "int", 0, "first N usable images by id (0: all)", min=0, recipe="limit"),
    Param("work-dir", help="checkpoint folder kept across runs", required=True),
    Param(
        "devices", default="0", help="device ids this node uses, e.g. 0,1,2,3 (one process each)"
    ),
    Param(
        "device-type",
        default="auto",
        help="auto, npu, cuda or cpu (auto: npu > cuda > cpu)",
        recipe="train_device",
    ),
    Param("epochs", "int", schedule.EPOCHS, "epochs", min=1, recipe="epochs"),
    Param(
        "batch-size",
        "int",
        8,
        "images per device and step (ModelZoo: 8)",
        min=1,
        recipe="train_batch_size",
    ),
    Param(
        "lr",
        default=str(SEED_LR),
        help="base lr (the seed's 0.04), or auto: 0.01 x (batch x devices) / 16",
        recipe="lr",
    ),
    Param(
        "weights",
        help="ImageNet backbone (MSRA R-50.pkl or detectron2 layout); none: random init, "
        "FrozenBN calibrated",
        recipe="backbone",
    ),
    Param(
        "resume",
        default="no",
        help="auto: continue from the work folder's newest checkpoint if any; yes: it must "
        "exist; no (the default without the flag): start over, removing old checkpoints",
        nargs="?",
        const="yes",
        recipe="resume",
    ),
    Param(
        "max-iters", "int", 0, "stop after N iterations (0: all epochs)", min=0, recipe="max_iters"
    ),
    Param(
        "amp",
        default="auto",
        help="mixed precision: auto (on for NPU / CUDA), on, off, bf16",
        recipe="amp",
    ),
    Param(
        "workers",
        "int",
        4,
        "loader processes per device (never more than the cores)",
        min=0,
        max=32,
        recipe="train_workers",
    ),
    Param("min-size", "int", MIN_SIZE, "short side", min=1, recipe="train_min_size"),
    Param("max-size", "int", MAX_SIZE, "long side cap", min=1, recipe="train_max_size"),
    Param(
        "pad-size",
        "int",
        0,
        # The seed profile pads each image to a fixed frame (1344 x 800 or 800 x 1344, as
        # the seed's modified Pad does); the upstream profile to a multiple of 32, or N x N.
        "upstream profile: 0 pads to a multiple of 32; N: to N x N",
        min=0,
        recipe="train_pad_size",
    ),
    Param(
        "checkpoint-every",
        "int",
        0,
        "also checkpoint every N iterations",
        min=0,
        recipe="checkpoint_every",
    ),
    Param(
        "checkpoint-epochs",
        "int",
        1,
        "checkpoint after every N epochs (0: only --checkpoint-every and the end)",
        min=0,
        recipe="checkpoint_epochs",
    ),
    Param("log-every", "int", 20, "log line every N iterations", min=1, recipe="log_every"),
    Param("seed", "int", 0, "seed of the init, the order and the flips", recipe="train_seed"),
    Param(
        "threads", "int", 0, "CPU threads per process (0: torch's)", min=0, recipe="train_threads"
    ),
    Param(
        "warmup-iters",
        "int",
        schedule.WARMUP_ITERS,
        "linear warm-up iterations",
        min=0,
        recipe="warmup_iters",
    ),
    Param("warmup-ratio", "float", schedule.WARMUP_RATIO, "warm-up start factor (0.001)"),
    Param("steps", default="8,11", help="epochs after which the lr drops 10x", recipe="steps"),
    Param(
        "clip-grad",
        "float",
        SEED_CLIP_GRAD,
        "max gradient L2 norm (the seed's 10; 0: no clipping)",
        min=0,
        recipe="clip_grad",
    ),
    Param(
        "eval",
        "bool",
        help="evaluate on COCO val2017 at the end (same --data root)",
        recipe="train_eval",
    ),
    Param("eval-data", help="COCO root with val2017/ for --eval (default: --data)"),
    Param(
        "eval-limit",
        "int",
        0,
        "evaluate the first N val images (0: all)",
        min=0,
        recipe="train_eval_limit",
    ),
    Param("eval-input-size", "int", 1344, "padded eval input (1344)"),
    Param("eval-min-size", "int", 0, "eval short side (0: 800)"),
    Param("eval-max-size", "int", 0, "eval long side cap (0: 1333)"),
    Param(
        "profile",
        default="seed",
        choices=("seed", "upstream"),
        help="seed (default): the ModelZoo's executed mmdetection (first 40 boxes an image, "
        "fixed 1344 x 800 frames, static loss scale 64); upstream: mmdetection's config",
        recipe="profile",
    ),
    Param(
        "eval-profile",
        choices=("seed", "upstream"),
        help="the inference recipe's profile the evaluation follows (default: --profile)",
    ),
    # Several nodes (nodes.py, docs/multihost.md): a flag not given is read from the
    # scheduler's variables (NNODES / WORLD_SIZE, NODE_RANK / RANK, MASTER_ADDR...).
    Param(
        "nnodes",
        "int",
        None,
        "machines taking part (else NNODES / WORLD_SIZE; 1)",
        min=1,
        recipe="nnodes",
    ),
    Param(
        "node-rank",
        "int",
        None,
        "this machine's index (else NODE_RANK / RANK; 0)",
        min=0,
        recipe="node_rank",
    ),
    Param("master-addr", help="address of node 0 (else MASTER_ADDR)", recipe="master_addr"),
    Param(
        "master-port",
        "int",
        None,
        "port on node 0 (else MASTER_PORT; %d)" % nodes.DEFAULT_MASTER_PORT,
        min=1,
        max=65535,
        recipe="master_port",
    ),
    Param(
        "local-addr",
        help="this host's address the nodes talk over (else LOCAL_ADDR; HCCL_IF_IP)",
        recipe="local_addr",
    ),
    Param(
        "connect-timeout",
        "float",
        nodes.DEFAULT_CONNECT_TIMEOUT,
        "seconds to reach node 0 / wait for the others; HCCL_CONNECT_TIMEOUT",
        min=1,
        recipe="connect_timeout",
    ),
    Param(
        "cpu-bind",
        default="auto",
        choices=("auto", "on", "off"),
        help="each rank on its own cores: auto (NPU hosts), on, off",
        recipe="cpu_bind",
    ),
    Param("recipe", help="recipe.yaml with the published training numbers (published_train)"),
)
