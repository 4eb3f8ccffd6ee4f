"""Before the training processes start on several nodes: agree, and share the resume point.

Node 0's launcher listens on the master port; every other node's launcher connects to
it (retrying until the connect timeout: a master that never answers is one line naming
its address and port), sends its facts and waits. Node 0 compares each node's facts with
its own (`differences`: nnodes, node rank, global batch, the code and config
fingerprints, the dataset's), then answers every node at once: either the one line
naming the first node that differs and in what (every node stops with it), or which
checkpoint the run continues from (node 0's newest complete one, or none). A node
without the identical file (its sha256 differs, or it has no such file: its own work
folder) receives it over the same connection and writes it into its work folder before
its processes start. Then node 0 closes the port and starts torchrun on it; the others'
torchrun connect to it (retrying) as in any multi-node run.

Messages are one line of JSON each; a file follows its announcement as raw bytes.
"""

import hashlib
import json
import os
import socket
import time

from zoostage.errors import UserError

CHUNK = 1 << 20
RETRY_SECONDS = 0.5
# Files that make up the training code (the code fingerprint): the repository's packages
# the training processes import.
CODE_PACKAGES = ("models", "data_scripts", "zoostage")
# Config keys that are this node's own business (paths, local devices, loader threads).
NODE_LOCAL_KEYS = (
    "out", "data", "records", "work_dir", "devices", "node_rank", "workers", "threads",
    "eval_data", "dataset", "resume", "resume_from", "local_addr", "cpu_bind", "log_every",
)  # fmt: skip


# -- the facts a node brings ---------------------------------------------------------------
def code_fingerprint(repo):
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for folder, dirs, files in sorted(os.walk(os.path.join(repo, package))):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    digest.update(os.path.relpath(path, repo).encode() + b"\0")
                    with open(path, "rb") as handle:
                        digest.update(handle.read())
    return digest.hexdigest()


def dataset_fingerprint(records):
    """sha256 over what training reads of each image: id, file name, size, boxes, labels."""
    digest = hashlib.sha256()
    for record in records:
        head = "%d|%s|%d|%d|" % (
            record["id"],
            os.path.basename(record["path"]),
            record["height"],
            record["width"],
        )
        digest.update(head.encode())
        digest.update(record["boxes"].astype("<f4").tobytes())
        digest.update(record["labels"].astype("<i8").tobytes())
    return digest.hexdigest()


def shared_config(config):
    """The config entries every node must share (the run's definition)."""
    return dict((k, v) for k, v in sorted(config.items()) if k not in NODE_LOCAL_KEYS)


def facts(config, nproc, nnodes, node_rank, code, dataset):
    shared = shared_config(config)
    return {
        "node_rank": node_rank,
        "nnodes": nnodes,
        "nproc": nproc,
        "batch_size": int(config["batch_size"]),
        "global_batch": int(config["batch_size"]) * nproc * nnodes,
        "code": code,
        "config": shared,
        "config_fingerprint": hashlib.sha256(
            json.dumps(shared, sort_keys=True).encode()
        ).hexdigest(),
        "dataset": dataset,
        "dataset_images": config.get("dataset", {}).get("images"),
    }


def differences(mine, theirs):
    """What node `theirs` disagrees with node 0 (`mine`) on, in words ([] if nothing)."""
    node = "node %s" % theirs.get("node_rank")
    found = []
    if theirs.get("nnodes") != mine["nnodes"]:
        found.append("nnodes %s (node 0: %s)" % (theirs.get("nnodes"), mine["nnodes"]))
    if theirs.get("global_batch") != mine["global_batch"]:
        found.append(
            "global batch %s = %s per process x %s processes x %s nodes (node 0: %s = %s x %s "
            "x %s)" % (
                theirs.get("global_batch"), theirs.get("batch_size"), theirs.get("nproc"),
                theirs.get("nnodes"), mine["global_batch"], mine["batch_size"],
                mine["nproc"], mine["nnodes"],
            )
        )  # fmt: skip
    if theirs.get("code") != mine["code"]:
        found.append(
            "code fingerprint %s (node 0: %s): install the same zoobox on every node"
            % (str(theirs.get("code"))[:12], mine["code"][:12])
        )
    if theirs.get("config_fingerprint") != mine["config_fingerprint"]:
        other = theirs.get("config") or {}
        keys = sorted(set(other) | set(mine["config"]))
        changed = [
            "%s %s (node 0: %s)" % (k, other.get(k), mine["config"].get(k))
            for k in keys
            if other.get(k) != mine["config"].get(k)
        ]
        found.append("config fingerprint: " + ", ".join(changed or ["differs"]))
    if theirs.get("dataset") != mine["dataset"]:
        found.append(
            "dataset fingerprint %s, %s images (node 0: %s, %s images): give every node the "
            "same COCO files" % (
                str(theirs.get("dataset"))[:12], theirs.get("dataset_images"),
                mine["dataset"][:12], mine["dataset_images"],
            )
        )  # fmt: skip
    if not found:
        return None
    return "%s differs from node 0 in %s" % (node, "; ".join(found))


# -- the resume point --------------------------------------------------------------------------
def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_checkpoint(path, iteration):
    """What node 0 tells the others about the checkpoint the run continues from."""
    if path is None:
        return {"name": None}
    return {
        "name": os.path.basename(path),
        "sha256": file_sha256(path),
        "size": os.path.getsize(path),
        "iteration": int(iteration),
    }


def have_same(work_dir, checkpoint):
    path = os.path.join(work_dir, checkpoint["name"])
    return os.path.isfile(path) and file_sha256(path) == checkpoint["sha256"]


# -- the wire ----------------------------------------------------------------------------------
class Channel(object):
    """One connection: JSON lines and raw file bytes, every read bounded by `timeout`."""

    def __init__(self, sock, peer, timeout):
        sock.settimeout(timeout)
        self.sock = sock
        self.peer = peer
        self.buffer = b""

    def send(self, message):
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def _fill(self):
        try:
            block = self.sock.recv(CHUNK)
        except socket.timeout:
            raise UserError(
                "no answer from %s within %g s" % (self.peer, self.sock.gettimeout())
            ) from None
        if not block:
            raise UserError(
                "%s closed the connection before the nodes agreed (its launcher stopped: see "
                "its output)" % self.peer
            )
        self.buffer += block

    def receive(self):
        while b"\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line.decode())

    def send_file(self, path):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                self.sock.sendall(block)

    def receive_file(self, target, size, sha256):
        """`size` bytes into `target` (atomically: a temporary file, checked, renamed)."""
        folder = os.path.dirname(target)
        tmp = os.path.join(
            folder, ".%s.tmp-%s-%d" % (os.path.basename(target), socket.gethostname(), os.getpid())
        )
        digest = hashlib.sha256()
        left = size
        try:
            with open(tmp, "wb") as handle:
                while left > 0:
                    if not self.buffer:
                        self._fill()
                    block, self.buffer = self.buffer[:left], self.buffer[left:]
                    handle.write(block)
                    digest.update(block)
                    left -= len(block)
                handle.flush()
                os.fsync(handle.fileno())
            if digest.hexdigest() != sha256:
                raise UserError("the checkpoint received from %s is damaged" % self.peer)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def close(self):
        self.sock.close()


def _listen(port):
    """A listening socket on every address (node 0's MASTER_ADDR may be a service address
    that routes to it, as on Kubernetes), IPv6 with IPv4 mapped when the host has it."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", port)
    except (OSError, AttributeError):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("", port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise UserError(
            "node 0 cannot listen on port %d (%s): another run or program uses it; pass "
            "another --master-port on every node" % (port, error.strerror or error)
        ) from None
    sock.listen(64)
    return sock


class Master(object):
    """Node 0's side: `open()` first (the others may start before node 0 is ready), then
    `agree(facts, checkpoint)` once node 0 knows its own facts."""

    def __init__(self, nodes, timeout):
        self.nodes = nodes
        self.timeout = float(timeout)
        self.sock = None
        self.opened = None

    def open(self):
        self.sock = _listen(self.nodes.master_port)
        self.opened = time.time()
        return self

    def _peers(self):
        """{node rank: (channel, facts)} of every other node, or a UserError."""
        peers = {}
        want = self.nodes.nnodes - 1
        while len(peers) < want:
            left = self.opened + self.timeout - time.time()
            if left <= 0:
                missing = sorted(set(range(1, self.nodes.nnodes)) - set(peers))
                raise UserError(
                    "node(s) %s did not reach node 0 at port %d within %g s (connect "
                    "timeout): start the same command on every node, with --master-addr "
                    "%s" % (", ".join(map(str, missing)), self.nodes.master_port, self.timeout,
                            self.nodes.master_addr)
                )  # fmt: skip
            self.sock.settimeout(left)
            try:
                conn, address = self.sock.accept()
            except socket.timeout:
                continue
            channel = Channel(conn, "node at %s" % address[0], self.timeout)
            try:
                theirs = channel.receive()
            except (UserError, ValueError):
                channel.close()  # not one of ours (a port scan, a stray client): ignored
                continue
            rank = theirs.get("node_rank")
            if rank in peers or rank == 0 or not isinstance(rank, int):
                problem = "two nodes say they are node %s (%s and %s): give each its own " \
                    "--node-rank" % (rank, "node 0" if rank == 0 else peers[rank][0].peer,
                                     channel.peer)  # fmt: skip
                self._fail([*peers.values(), (channel, theirs)], problem)
            channel.peer = "node %s (%s)" % (rank, address[0])
            peers[rank] = (channel, theirs)
        return peers

    def _fail(self, peers, problem):
        for channel, _ in peers:
            try:
                channel.send({"error": problem})
            except OSError:
                pass
            channel.close()
        raise UserError(problem)

    def agree(self, mine, checkpoint, work_dir):
        """Compare every node's facts with `mine`; send the resume point (and the file)."""
        try:
            peers = self._peers()
            for rank in sorted(peers):
                problem = differences(mine, peers[rank][1])
                if problem:
                    self._fail(peers.values(), problem)
            for rank in sorted(peers):
                channel = peers[rank][0]
                channel.send({"ok": True, "checkpoint": checkpoint})
                if checkpoint.get("name") and channel.receive().get("need"):
                    channel.send_file(os.path.join(work_dir, checkpoint["name"]))
                    channel.receive()  # written
            for rank in sorted(peers):
                peers[rank][0].send({"start": True})
            for rank in sorted(peers):
                # The others close first: the port is free of TIME_WAIT here for torchrun.
                channel = peers[rank][0]
                try:
                    channel.sock.recv(1)
                except OSError:
                    pass
                channel.close()
        finally:
            self.sock.close()


def join(nodes, mine, work_dir, timeout, say):
    """A node other than 0: reach node 0 (retrying until `timeout`), agree, receive the
    resume point; returns node 0's checkpoint description."""
    deadline = time.time() + float(timeout)
    where = "%s port %d" % (nodes.master_addr, nodes.master_port)
    last = None
    while True:
        try:
            sock = socket.create_connection(
                (nodes.master_addr, nodes.master_port),
                timeout=max(1.0, min(10.0, deadline - time.time())),
                source_address=(nodes.local_addr, 0) if nodes.local_addr else None,
            )
            break
        except OSError as error:
            last = error
        if time.time() >= deadline:
            raise UserError(
                "cannot reach the master at %s from %s within %g s (last: %s): start node 0 "
                "first, check --master-addr / --master-port and that the port is open"
                % (where, nodes.local_addr, float(timeout), getattr(last, "strerror", None)
                   or last)
            )  # fmt: skip
        time.sleep(RETRY_SECONDS)
    channel = Channel(sock, "node 0 (%s)" % where, timeout)
    try:
        channel.send(mine)
        answer = channel.receive()
        if answer.get("error"):
            raise UserError(answer["error"])
        checkpoint = answer["checkpoint"]
        if checkpoint.get("name"):
            target = os.path.join(work_dir, checkpoint["name"])
            need = not have_same(work_dir, checkpoint)
            channel.send({"need": need})
            if need:
                say(
                    "receiving %s (%d bytes) from node 0" % (checkpoint["name"], checkpoint["size"])
                )
                channel.receive_file(target, checkpoint["size"], checkpoint["sha256"])
                channel.send({"written": True})
        start = channel.receive()
        if not start.get("start"):
            raise UserError("node 0 answered %r instead of the start" % start)
        return checkpoint
    finally:
        channel.close()
