"""Reading a result directory: proofs by username from disk, each verified before it leaves.

Version 2 (written by store_writer.py while the job runs):

    manifest.json          layout, depths, unit depth, counts, currencies, root, index key, files
    usernames.bin          every entry's username word (32 bytes), in input order
    balances.bin           every entry's balances, N_BYTES little-endian each, in input order
    nodes.bin              per real work unit, in input order: its levels 2 .. k-1, narrow records
                           (hash word + N balances of N_BYTES)
    upper.bin              the tree over every unit slot (wide records, leaves first): its level
                           0 holds the unit roots, its level d-k the mini-tree roots, its top the root
    index-keys.bin         sorted keyed fingerprints of the usernames   (index.py)
    index-positions.bin    the entry position of each

Levels 0 and 1 are recomputed from the entries. The upper tree is rehashed when the directory
is opened and must lead to the manifest's root; every proof's path below it is rehashed and
must lead to its stored unit root: a damaged store gives a StoreError, never a wrong proof.
check() (summa-proof --check) compares every file with its SHA-256.

Version-1 directories (store_v1.py) still load; their proofs are verified the same way.
"""
import hashlib
import json
import mmap
import os

from ..cython_ext import _kernel, _records
from ..cython_ext.params import WORD
from . import store_v1
from .csv_reader import username_to_word, word_to_username
from .index import KEYS, POSITIONS, fingerprints, lookup
from .limits import layout_code, record_bytes, tree_bytes
from .proof import InvalidProof, verify_proof
from .shape import TreeShape
from .store_writer import FORMAT, STORED_FROM_LEVEL, narrow_record_bytes, stored_records
from .tree import Levels, zero_root
from .store_v1 import StoreError, publish

__all__ = ["StoreError", "publish", "load", "check", "StoredTree", "VerifiedV1"]


def _read_manifest(directory):
    path = os.path.join(directory, "manifest.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise StoreError(f"{path}: cannot read: {error.strerror} (is this a result directory?)") from None
    except ValueError:
        raise StoreError(f"{path}: not valid JSON") from None


def load(directory):
    """(tree, manifest) of a result directory of either version; tree.proof(key) is verified."""
    manifest = _read_manifest(directory)
    if manifest.get("format") == FORMAT and manifest.get("version") == 1:
        tree, manifest = store_v1.load(directory, check_sha256=False)
        return VerifiedV1(tree, directory), manifest
    if manifest.get("format") != FORMAT or manifest.get("version") != 2:
        raise StoreError(f"{os.path.join(directory, 'manifest.json')}: not a version 1 or 2 "
                         f"{FORMAT} manifest")
    return StoredTree(directory, manifest), manifest


def check(directory):
    """Compare every file of a result directory with the manifest's SHA-256s; StoreError
    naming the first damaged file. Returns the number of bytes checked."""
    manifest = _read_manifest(directory)
    if manifest.get("version") == 1:
        store_v1.load(directory, check_sha256=True)
        return sum(f["bytes"] for f in manifest["files"].values())
    total = 0
    for name, entry in sorted(manifest.get("files", {}).items()):
        path = os.path.join(directory, name)
        chunk = entry.get("sha256_of_slots")
        digest, outer, size = hashlib.sha256(), hashlib.sha256(), 0
        try:
            with open(path, "rb") as handle:
                while True:
                    block = handle.read(chunk if chunk else 1 << 22)
                    if not block:
                        break
                    size += len(block)
                    (outer.update(hashlib.sha256(block).digest()) if chunk else digest.update(block))
        except OSError as error:
            raise StoreError(f"{path}: cannot read: {error.strerror}") from None
        if size != entry["bytes"]:
            raise StoreError(f"{path}: {size} bytes, the manifest says {entry['bytes']}")
        if (outer if chunk else digest).hexdigest() != entry["sha256"]:
            raise StoreError(f"{path}: contents do not match the manifest's sha256 (the file is damaged)")
        total += size
    return total


def _map(directory, name, expected):
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != expected:
                raise StoreError(f"{path}: {size} bytes, the manifest says {expected}")
            return memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)) if size else memoryview(b"")
    except OSError as error:
        raise StoreError(f"{path}: cannot read: {error.strerror}") from None


def _hex(word):
    return "0x" + bytes(word[::-1]).hex()


def _narrow_hex(value, n_bytes):
    return "0x" + "00" * (WORD - n_bytes) + bytes(value[::-1]).hex()


class StoredTree:
    """A version-2 result directory, memory-mapped; proofs read O(depth) records from disk."""

    def __init__(self, directory, manifest):
        self.directory, self.manifest = directory, manifest
        try:
            self._open(manifest)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, StoreError):
                raise
            raise StoreError(f"{directory}: inconsistent result directory ({error})") from None

    def _open(self, m):
        self.layout, self.n, self.n_bytes = m["layout"], m["n_currencies"], m["n_bytes"]
        self.code = layout_code(self.layout)
        self.currencies = m["currencies"]
        self.shape = TreeShape(m["entry_counts"], m["mini_depth"], m["unit_depth"])
        if self.shape.entries != m["entries"]:
            raise StoreError(f"{self.directory}: the entry counts do not add up to 'entries'")
        self.key = [int(part, 16) for part in m["index_key"]]
        files, n, k = m["files"], self.shape.entries, self.shape.unit_depth
        self.narrow = narrow_record_bytes(self.n, self.n_bytes)
        self.slot_records = stored_records(k)
        sizes = {"usernames.bin": WORD * n, "balances.bin": self.n * self.n_bytes * n,
                 "nodes.bin": self.slot_records * self.narrow * self.shape.units,
                 "upper.bin": tree_bytes(self.shape.upper_depth, self.n), KEYS: 8 * n, POSITIONS: 8 * n}
        maps = {name: _map(self.directory, name, size) for name, size in sizes.items()
                if files[name]["bytes"] == size or _size_error(self.directory, name, files[name], size)}
        self.usernames, self.balances = maps["usernames.bin"], maps["balances.bin"]
        self.nodes = maps["nodes.bin"]
        self.keys, self.positions = maps[KEYS].cast("Q"), maps[POSITIONS].cast("Q")
        self.upper = Levels(bytes(maps["upper.bin"]), self.shape.upper_depth, self.n)   # a verified copy
        self._verify_upper(m["root"])
        self.root = self.upper.root
        self.count = n
        self.record = record_bytes(self.n)
        self.leaf_zero = zero_root(0, self.n, self.layout)

    def _verify_upper(self, root_json):
        """Rehash the upper tree from its unit roots: it must be what is stored, and lead to
        the manifest's root (and the unit roots of padding slots must be the zero subtree)."""
        upper, shape = self.upper, self.shape
        rebuilt = Levels.allocate(upper.depth, self.n)
        leaves = upper.offset(1) if upper.depth else len(upper.nodes)
        rebuilt.nodes[:leaves] = upper.nodes[:leaves]
        try:
            rebuilt.hash_up(self.layout)
        except _kernel.KernelError:
            raise StoreError(f"{self.directory}: upper.bin is damaged (not field elements)") from None
        real = {slot for slot, _ in shape.unit_slots()}
        zero = zero_root(shape.unit_depth, self.n, self.layout)
        padding_ok = all(upper.record(0, slot) == zero for slot in range(1 << upper.depth)
                         if slot not in real) if len(real) < 1 << 16 else True
        if bytes(rebuilt.nodes) != bytes(upper.nodes) or not padding_ok or \
                upper.root.to_json() != root_json:
            raise StoreError(f"{self.directory}: upper.bin does not lead to the manifest's root "
                             f"(the store is damaged; summa-proof --check names the file)")

    # ---- finding entries --------------------------------------------------------------------

    def index_of(self, username):
        """The global leaf index of a username, or None."""
        try:
            word = username_to_word(username)
        except ValueError:
            return None
        fingerprint = fingerprints(word, 1, self.key)[0]
        position = lookup(self.keys, self.positions, fingerprint,
                          lambda p: 0 <= p < self.count and self.usernames[WORD * p:WORD * (p + 1)] == word)
        return None if position is None else self.shape.global_index(position)

    def _entry(self, position):
        """(username word, wide balance words) of the entry at a position."""
        width = self.n * self.n_bytes
        wide = bytearray(WORD * self.n)
        _records.widen(self.balances[width * position:width * (position + 1)], self.n,
                       self.n_bytes, wide)
        return bytes(self.usernames[WORD * position:WORD * (position + 1)]), bytes(wide)

    # ---- proofs -------------------------------------------------------------------------------

    def proof(self, key):
        """The inclusion proof JSON of a username or global index, verified; KeyError or
        IndexError when there is no such entry; StoreError when the store is damaged."""
        return self.proofs([key])[0]

    def proofs(self, keys):
        """Many proofs; their paths are rehashed side by side (the kernel's lanes)."""
        parts = [self._parts(self._resolve(key)) for key in keys]
        self._verify(parts)
        return [self._json(*part) for part in parts]

    def _resolve(self, key):
        if isinstance(key, str):
            index = self.index_of(key)
            if index is None:
                raise KeyError(f"username {key!r} is not in the tree")
            return index
        if type(key) is not int:
            raise TypeError(f"expected a username or an integer index, got {key!r}")
        self.shape.locate(key)
        return key

    def _parts(self, index):
        """(index, entry, leaf record, sibling records wide, unit serial, unit slot)."""
        shape, k = self.shape, self.shape.unit_depth
        batch, local = shape.locate(index)
        group = 1 << min(k, STORED_FROM_LEVEL)
        base = local & ~(group - 1)
        users, balances, real = bytearray(), bytearray(), 0
        for i in range(base, min(base + group, shape.counts[batch])):
            user, wide = self._entry(shape.position(batch, i))
            users += user
            balances += wide
            real += 1
        leaves = bytearray(self.record * real)
        _kernel.hash_leaves(bytes(users), bytes(balances), real, self.n, leaves)
        leaves += self.leaf_zero * (group - real)
        rec = self.record
        leaf_records = [bytes(leaves[rec * i:rec * (i + 1)]) for i in range(group)]
        me = local - base
        entry = (bytes(users[WORD * me:WORD * (me + 1)]), bytes(balances[WORD * self.n * me:WORD * self.n * (me + 1)]))
        siblings = []
        if group >= 2:
            siblings.append(leaf_records[me ^ 1])
        if group == 4:
            other = (me >> 1) ^ 1
            parent = bytearray(rec)
            _kernel.hash_level(leaf_records[2 * other] + leaf_records[2 * other + 1], 1, self.n,
                               self.code, parent)
            siblings.append(bytes(parent))
        serial = shape.serial(batch, local)
        in_unit = local & ((1 << k) - 1)
        offset = 0
        for level in range(STORED_FROM_LEVEL, k):
            i = (in_unit >> level) ^ 1
            start = (self.slot_records * serial + offset + i) * self.narrow
            wide = bytearray(rec)
            _records.widen_records(self.nodes[start:start + self.narrow], 1, self.n, self.n_bytes, wide)
            siblings.append(bytes(wide))
            offset += 1 << (k - level)
        slot = index >> k
        for level in range(self.upper.depth):
            siblings.append(self.upper.record(level, (slot >> level) ^ 1))
        return index, entry, leaf_records[me], siblings, slot

    def _verify(self, parts):
        """Rehash every path from its leaf to its unit root, all proofs in one kernel call per
        level; the unit root must be the verified one in the upper tree."""
        if not parts:
            return
        k, rec = self.shape.unit_depth, self.record
        current = [part[2] for part in parts]
        for level in range(k):
            children = bytearray()
            for (index, _, _, siblings, _), node in zip(parts, current):
                pair = (siblings[level], node) if (index >> level) & 1 else (node, siblings[level])
                children += pair[0] + pair[1]
            parents = bytearray(rec * len(parts))
            try:
                _kernel.hash_level(children, len(parts), self.n, self.code, parents)
            except _kernel.KernelError:
                raise StoreError(f"{self.directory}: nodes.bin is damaged (not field elements)") from None
            current = [bytes(parents[rec * i:rec * (i + 1)]) for i in range(len(parts))]
        for (index, _, _, _, slot), node in zip(parts, current):
            if node != self.upper.record(0, slot):
                raise StoreError(f"{self.directory}: the stored path of entry {index} does not "
                                 f"lead to the manifest's root (the store is damaged; "
                                 f"summa-proof --check names the file)")

    def _json(self, index, entry, leaf, siblings, slot):
        n = self.n
        path = []
        for record in siblings:
            path.append({"hash": _hex(record[:WORD]),
                         "balances": [_hex(record[WORD * (1 + c):WORD * (2 + c)]) for c in range(n)]})
        return {
            "layout": self.layout, "n_currencies": n,
            "entry": {"username": word_to_username(entry[0]),
                      "balances": [str(int.from_bytes(entry[1][WORD * c:WORD * (c + 1)], "little"))
                                   for c in range(n)]},
            "index": index,
            "path": path,
            "path_indices": [(index >> level) & 1 for level in range(len(siblings))],
            "root": self.root.to_json(),
        }


def _size_error(directory, name, entry, size):
    raise StoreError(f"{os.path.join(directory, name)}: the manifest says {entry['bytes']} bytes, "
                     f"its shape needs {size}")


class VerifiedV1:
    """A version-1 tree whose proofs are checked against its root before they leave."""

    def __init__(self, tree, directory):
        self.tree, self.directory = tree, directory
        self.root, self.count = tree.root, tree.count

    def index_of(self, username):
        return self.tree.index_of(username)

    def proof(self, key):
        proof = self.tree.proof(key)
        try:
            proved = verify_proof(proof)
        except InvalidProof as error:
            raise StoreError(f"{self.directory}: damaged: the proof does not verify ({error})") from None
        if proved[0] != self.root.hash or tuple(proved[1]) != self.root.balances:
            raise StoreError(f"{self.directory}: damaged: the proof leads to another root")
        return proof

    def proofs(self, keys):
        return [self.proof(key) for key in keys]

