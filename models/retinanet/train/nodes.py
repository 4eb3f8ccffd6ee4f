"""Which node this is, where node 0 listens, and how this node's processes talk to it.

The seed measures multi-host training with one command per host:

    bash ./test/train_performance_multinodes.sh --data_path=... --batch_size=... \
        --nnodes=N --node_rank=R --local_addr=THIS_HOST_IP --master_addr=MASTER_IP

and zoobox's is `invoke retinanet.train --nnodes N --node-rank R --master-addr A
--local-addr L [--master-port P] --devices ...`. `resolve` turns those flags, or the
variables a scheduler sets when a flag is not given, into a `Nodes`:

| setting | flag wins, else the first variable set | default |
| --- | --- | --- |
| nnodes | NNODES; SLURM_NNODES; WORLD_SIZE / processes per node | 1 |
| node_rank | NODE_RANK; RANK; SLURM_NODEID | 0 |
| master_addr | MASTER_ADDR | (needed with nnodes > 1) |
| master_port | MASTER_PORT | 29500 |
| local_addr | LOCAL_ADDR | the address this host reaches master_addr from |

WORLD_SIZE and RANK are read as MindCluster's Ascend Operator sets them in each pod:
WORLD_SIZE is the number of processes (NPUs) in the job, so nnodes = WORLD_SIZE /
LOCAL_WORLD_SIZE (or / the --devices of this node), and RANK is the pod's *node* rank
(0 for the master pod). torchrun gives its workers a RANK that is a process rank; this
module runs in the launcher, before torchrun, and never sees that one.

The local address must be held by an interface of this host (`interface_of`): gloo
binds to that interface (GLOO_SOCKET_IFNAME), HCCL to the address (HCCL_IF_IP).
"""

import collections
import ctypes
import ctypes.util
import os
import socket

from zoostage.errors import UserError

DEFAULT_MASTER_PORT = 29500
DEFAULT_CONNECT_TIMEOUT = 300  # seconds

Nodes = collections.namedtuple(
    "Nodes", "nnodes node_rank master_addr master_port local_addr interface sources"
)


def _int_from(environ, name, what):
    text = environ.get(name)
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UserError("%s=%r is not a whole number (%s)" % (name, text, what)) from None


def _nnodes_from_env(environ, nproc):
    for name in ("NNODES", "SLURM_NNODES"):
        if environ.get(name, "") != "":
            return _int_from(environ, name, "number of nodes"), name
    if environ.get("WORLD_SIZE", "") == "":
        return None, None
    world = _int_from(environ, "WORLD_SIZE", "processes in the job")
    per_node = nproc
    if environ.get("LOCAL_WORLD_SIZE", "") != "":
        per_node = _int_from(environ, "LOCAL_WORLD_SIZE", "processes per node")
        if per_node != nproc:
            raise UserError(
                "LOCAL_WORLD_SIZE=%d but --devices gives %d processes on this node: pass "
                "the devices this pod was given" % (per_node, nproc)
            )
    if per_node < 1 or world % per_node:
        raise UserError(
            "WORLD_SIZE=%d processes cannot be split into nodes of %d: pass --nnodes"
            % (world, per_node)
        )
    return world // per_node, "WORLD_SIZE %d / %d processes per node" % (world, per_node)


def _first_env(environ, names):
    for name in names:
        if environ.get(name, "") != "":
            return environ[name], name
    return None, None


def resolve(nnodes=None, node_rank=None, master_addr=None, master_port=None,
            local_addr=None, nproc=1, environ=None):  # fmt: skip
    """A Nodes from the flags (None: not given) and, for the others, `environ`."""
    environ = os.environ if environ is None else environ
    sources = {}
    if nnodes is None:
        nnodes, sources["nnodes"] = _nnodes_from_env(environ, nproc)
    if node_rank is None:
        text, name = _first_env(environ, ("NODE_RANK", "RANK", "SLURM_NODEID"))
        if name:
            node_rank, sources["node_rank"] = _int_from(environ, name, "node rank"), name
    if master_addr is None:
        master_addr, sources["master_addr"] = _first_env(environ, ("MASTER_ADDR",))
    if master_port is None:
        text, name = _first_env(environ, ("MASTER_PORT",))
        if name:
            master_port, sources["master_port"] = _int_from(environ, name, "port"), name
    if local_addr is None:
        local_addr, sources["local_addr"] = _first_env(environ, ("LOCAL_ADDR",))
    nnodes = 1 if nnodes is None else int(nnodes)
    node_rank = 0 if node_rank is None else int(node_rank)
    master_port = DEFAULT_MASTER_PORT if master_port is None else int(master_port)
    sources = dict((k, v) for k, v in sources.items() if v)
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise UserError("need 0 <= node rank < nnodes, not %d, %d%s"
                        % (node_rank, nnodes, _said(sources, "node_rank", "nnodes")))  # fmt: skip
    if not 0 < master_port < 65536:
        raise UserError("--master-port %d is not a TCP port (1..65535)" % master_port)
    if nnodes > 1 and not master_addr:
        raise UserError(
            "training on %d nodes needs --master-addr (node 0's address; or MASTER_ADDR)" % nnodes
        )
    interface = None
    if nnodes > 1 and not local_addr:
        local_addr = route_source(master_addr, master_port)
        sources["local_addr"] = "the address this host reaches %s from" % master_addr
    if local_addr:
        interface = interface_of(local_addr)
    return Nodes(nnodes, node_rank, master_addr, master_port, local_addr, interface, sources)


def _said(sources, *keys):
    found = ["%s from %s" % (k, sources[k]) for k in keys if k in sources]
    return " (%s)" % ", ".join(found) if found else ""


def route_source(address, port):
    """The local address the kernel would send from to reach `address` (no packet sent)."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(address, port, 0, socket.SOCK_DGRAM)[0]
        probe = socket.socket(family, socket.SOCK_DGRAM)
        try:
            probe.connect(sockaddr)
            return probe.getsockname()[0]
        finally:
            probe.close()
    except OSError as error:
        raise UserError(
            "cannot find a route from this host to the master %s (%s): pass --local-addr, "
            "this host's address on the network the nodes share" % (address, error)
        ) from None


# -- interfaces -------------------------------------------------------------------------------
class _SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("addr", ctypes.c_ubyte * 4)]  # fmt: skip


class _SockaddrIn6(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("flowinfo", ctypes.c_uint32), ("addr", ctypes.c_ubyte * 16),
                ("scope_id", ctypes.c_uint32)]  # fmt: skip


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("next", ctypes.POINTER(_Ifaddrs)), ("name", ctypes.c_char_p), ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(_SockaddrIn)), ("netmask", ctypes.c_void_p),
    ("ifu", ctypes.c_void_p), ("data", ctypes.c_void_p),
]  # fmt: skip


def interface_addresses():
    """[(interface name, address text)] of this host (getifaddrs(3): IPv4 and IPv6,
    secondary addresses included); Linux's sockaddr layout."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        raise OSError(ctypes.get_errno(), "getifaddrs failed")
    found = []
    try:
        entry = head
        while entry:
            item = entry.contents
            if item.addr:
                family = item.addr.contents.family
                if family == socket.AF_INET:
                    raw = bytes(bytearray(item.addr.contents.addr))
                    found.append((item.name.decode(), socket.inet_ntop(socket.AF_INET, raw)))
                elif family == socket.AF_INET6:
                    six = ctypes.cast(item.addr, ctypes.POINTER(_SockaddrIn6)).contents
                    raw = bytes(bytearray(six.addr))
                    found.append((item.name.decode(), socket.inet_ntop(socket.AF_INET6, raw)))
            entry = item.next
    finally:
        libc.freeifaddrs(head)
    return found


def _canonical(address):
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, address))
        except (OSError, ValueError):
            continue
    return None


def interface_of(address, addresses=None):
    """The name of this host's interface holding `address`, or a UserError naming it."""
    wanted = _canonical(address)
    if wanted is None:
        raise UserError(
            "--local-addr %s is not an IP address: give this host's address on the network "
            "the nodes share (as the seed's --local_addr)" % address
        )
    addresses = interface_addresses() if addresses is None else addresses
    for name, held in addresses:
        if _canonical(held) == wanted:
            return name
    shown = ", ".join("%s %s" % pair for pair in addresses if not pair[1].startswith("fe80"))
    raise UserError(
        "--local-addr %s is not held by any interface of this host (it has: %s): give this "
        "host's own address on the network the nodes share" % (address, shown or "none")
    )


# CANN's documented range for HCCL_CONNECT_TIMEOUT, seconds (zoobox/runners/npu.py too).
HCCL_CONNECT_RANGE = (120, 7200)


def worker_environment(nodes, connect_timeout, environ=None):
    """Variables the training processes need to talk across hosts (empty on one node
    without --local-addr). An HCCL_CONNECT_TIMEOUT already set (by you, or the docker
    runner's zoobox.docker.hccl_connect_timeout) is kept; else the connect timeout,
    brought into CANN's range."""
    environ = os.environ if environ is None else environ
    env = {}
    if nodes.local_addr:
        env["HCCL_IF_IP"] = nodes.local_addr  # HCCL: the host's own address
        env["GLOO_SOCKET_IFNAME"] = nodes.interface  # gloo: the interface holding it
    if nodes.nnodes > 1 and not environ.get("HCCL_CONNECT_TIMEOUT"):
        low, high = HCCL_CONNECT_RANGE
        env["HCCL_CONNECT_TIMEOUT"] = str(min(high, max(low, int(connect_timeout))))
    return env


# -- per-rank CPU cores (the seed's taskset) ---------------------------------------------------
def cpu_ranges(cores, nproc):
    """Each local rank's share of `cores` (sorted ids), as the seed's 8-device script on
    aarch64 computes it: KERNEL_NUM = cores / processes, rank r gets
    [KERNEL_NUM * r, KERNEL_NUM * r + KERNEL_NUM - 1]. None when there are fewer cores
    than processes (no binding)."""
    cores = sorted(cores)
    per_rank = len(cores) // max(1, nproc)
    if per_rank < 1:
        return None
    return [cores[per_rank * r : per_rank * (r + 1)] for r in range(nproc)]


def resolve_cpu_bind(mode, npu_host):
    """auto: on for NPU hosts (as the seed binds on its aarch64 NPU servers), else off."""
    mode = str(mode or "auto").lower()
    if mode in ("on", "yes", "true", "1"):
        return True
    if mode in ("off", "no", "false", "0", "none"):
        return False
    if mode != "auto":
        raise UserError("--cpu-bind takes auto, on or off, not %r" % mode)
    return bool(npu_host)


def range_text(cores):
    """[0, 1, 2, 5] -> '0-2,5' (taskset -c's syntax)."""
    parts, start, prev = [], None, None
    for core in sorted(cores):
        if start is None:
            start = prev = core
        elif core == prev + 1:
            prev = core
        else:
            parts.append("%d-%d" % (start, prev) if prev > start else "%d" % start)
            start = prev = core
    if start is not None:
        parts.append("%d-%d" % (start, prev) if prev > start else "%d" % start)
    return ",".join(parts)
