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
    names.bin              under the keccak256 username encoding only (SPEC section 7): the
                           usernames' UTF-8 bytes, concatenated (a word is then a digest)
    name-ends.bin          under keccak256 only: where each username ends in names.bin (u64)

The manifest states the variants (SPEC section 7): username_encoding (absent: bytes),
is_sorted (absent: false) and csv_format; every proof states the first two.

Levels 0 and 1 are recomputed from the entries. The upper tree is rehashed when the directory
is opened and must lead to the manifest's root (a verified copy stays in memory); every proof's
path below it is rehashed from its entry up to a verified node (its unit root, or a node of
the bounded cache of verified copies, StoredTree): a damaged store gives a StoreError, never a
wrong proof. check() (summa-proof --check) compares every file with its SHA-256.

Version-1 directories (store_v1.py) still load; their proofs are verified the same way.
"""
import hashlib
import json
import os
import threading
from array import array
from json.encoder import encode_basestring_ascii

from ..cython_ext import _kernel, _records
from ..cython_ext.params import WORD
from . import store_v1
from .csv_reader import username_to_word, word_to_username
from .index import KEYS, POSITIONS, fingerprints
from .limits import layout_code, record_bytes, tree_bytes
from .proof import InvalidProof, verify_proof
from .shape import TreeShape
from .store_writer import FORMAT, NAME_ENDS, NAMES, narrow_record_bytes, stored_records
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


def load(directory, cache_bytes=None):
    """(tree, manifest) of a result directory of either version; tree.proof(key) is verified.
    cache_bytes: the verified node cache of a version-2 tree (CACHE_BYTES when None)."""
    manifest = _read_manifest(directory)
    if manifest.get("format") == FORMAT and manifest.get("version") == 1:
        tree, manifest = store_v1.load(directory, check_sha256=False)
        return VerifiedV1(tree, directory), manifest
    if manifest.get("format") != FORMAT or manifest.get("version") != 2:
        raise StoreError(f"{os.path.join(directory, 'manifest.json')}: not a version 1 or 2 "
                         f"{FORMAT} manifest")
    return StoredTree(directory, manifest, CACHE_BYTES if cache_bytes is None else cache_bytes), manifest


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
    """A file mapped read-only, as a memoryview (store_v1 checks its size the same way)."""
    return memoryview(store_v1._map(directory, name, expected))


CACHE_BYTES = 32 << 20      # the verified node cache of one open result, at most (see cache_level)
BATCH = 4096                # proofs walked together by proofs(), at most
WARM_PAIRS = 128            # stored node pairs verified by one warm() call (~0.7 ms of kernel)


def cache_level(units, unit_depth, n_currencies, n_bytes, budget=CACHE_BYTES):
    """The lowest unit level c >= 2 whose nodes, with every level above it up to the unit
    roots, fit in `budget` bytes as verified copies (the unit depth k: no cache).

    Their memory is units x (2^(k-c+1) - 2) x (33 + N x N_BYTES) bytes: at 2^28 entries of one
    currency in units of 2^16, c = 10 and 23.1 MiB; at 2^20 in units of 2^15, c = 2 and 23.5 MiB."""
    for level in range(2, unit_depth):
        if _records.StoredPaths.cache_bytes_for(units, unit_depth, level, n_currencies,
                                                n_bytes) <= budget:
            return level
    return unit_depth


class StoredTree:
    """A version-2 result directory, memory-mapped; proofs read O(depth) records from disk.

    Every proof is verified before it leaves: its entry and the entries of its group of 4
    leaves are hashed up to its level-2 node, then each pair on its path, from there up to
    the first node whose verified copy is held in memory (the unit root in the upper tree,
    checked at open, or a node of the verified cache), is hashed and must equal the record
    one level up: the stored record of the path's next node, and at the top that verified
    copy. So the path hashes, level by level, from the entries up to a verified node, and
    every stored record on it (the path's own nodes and their siblings) is checked. The
    siblings above that node are the verified copies; every other record of the proof is
    the very bytes that were hashed or checked. A batch (proofs()) hashes each distinct node
    once: one kernel call for the leaves, one per computed level (1 and 2), and one for every
    stored pair of every path at once (a proof alone would leave most of the kernel's 8
    lanes idle in a call per level). After a batch verifies, its nodes at unit levels
    >= cache_level (their siblings included) are kept as verified copies, at most
    cache_bytes (CACHE_BYTES by default), so later climbs stop lower.

    Guarantee: a proof that leaves is the proof of the undamaged store, byte for byte,
    whatever the batch and whatever the cache holds; a proof whose bytes read do not verify
    raises StoreError. A fresh tree reads every stored record of the proof's unit path, so
    damage to its entry, its neighbours' entries or its unit's stored siblings is refused;
    once nodes are cached, damage to the file under a cached node is not read again, so
    it is no longer seen (the proof stays right). Damage found in a batch is sorted out proof
    by proof: a damaged path refuses only the proofs that read it."""

    def __init__(self, directory, manifest, cache_bytes=CACHE_BYTES):
        self.directory, self.manifest = directory, manifest
        self.lock = threading.Lock()
        try:
            self._open(manifest, cache_bytes)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, StoreError):
                raise
            raise StoreError(f"{directory}: inconsistent result directory ({error})") from None

    def _open(self, m, cache_bytes):
        self.layout, self.n, self.n_bytes = m["layout"], m["n_currencies"], m["n_bytes"]
        self.code = layout_code(self.layout)
        self.currencies = m["currencies"]
        self.shape = TreeShape(m["entry_counts"], m["mini_depth"], m["unit_depth"])
        if self.shape.entries != m["entries"]:
            raise StoreError(f"{self.directory}: the entry counts do not add up to 'entries'")
        self.key = [int(part, 16) for part in m["index_key"]]
        self.encoding = m.get("username_encoding", "bytes")
        self.is_sorted = m.get("is_sorted", False)
        if self.encoding not in ("bytes", "keccak256") or type(self.is_sorted) is not bool:
            raise StoreError(f"{self.directory}: the manifest names an unknown username encoding "
                             f"{self.encoding!r} or a non-boolean is_sorted")
        files, n, k = m["files"], self.shape.entries, self.shape.unit_depth
        self.narrow = narrow_record_bytes(self.n, self.n_bytes)
        self.slot_records = stored_records(k)
        sizes = {"usernames.bin": WORD * n, "balances.bin": self.n * self.n_bytes * n,
                 "nodes.bin": self.slot_records * self.narrow * self.shape.units,
                 "upper.bin": tree_bytes(self.shape.upper_depth, self.n), KEYS: 8 * n, POSITIONS: 8 * n}
        if self.encoding != "bytes":     # names.bin: any size, its ends say where each name is
            sizes.update({NAMES: files[NAMES]["bytes"], NAME_ENDS: 8 * n})
        maps = {name: _map(self.directory, name, size) for name, size in sizes.items()
                if files[name]["bytes"] == size or _size_error(self.directory, name, files[name], size)}
        self.names = maps.get(NAMES)
        self.name_ends = maps[NAME_ENDS].cast("Q") if NAME_ENDS in maps else None
        self.usernames, self.balances = maps["usernames.bin"], maps["balances.bin"]
        self.nodes = maps["nodes.bin"]
        self.keys, self.positions = maps[KEYS].cast("Q"), maps[POSITIONS].cast("Q")
        self.upper = Levels(bytes(maps["upper.bin"]), self.shape.upper_depth, self.n)   # a verified copy
        self._verify_upper(m["root"])
        self.root = self.upper.root
        self.count = n
        self.record = record_bytes(self.n)
        shape = self.shape
        self.paths = _records.StoredPaths(
            self.usernames, self.balances, self.nodes, self.upper.nodes, self.n, self.n_bytes,
            shape.depth, shape.mini_depth, k, array("q", shape.prefix), array("q", shape.counts),
            array("q", shape.units_before),
            cache_level(shape.units, k, self.n, self.n_bytes, cache_bytes))
        root = self.root.to_json()
        self._root = (root["hash"], root["balances"])
        self._head = (f'{{"layout":{json.dumps(self.layout)},"n_currencies":{self.n},'
                      f'"username_encoding":{json.dumps(self.encoding)},'
                      f'"is_sorted":{json.dumps(self.is_sorted)},"entry":{{"username":').encode()
        self._tail = f'],"root":{json.dumps(root, separators=(",", ":"))}}}\n'.encode()
        self._warm_at = (k - 1, 0)

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

    @property
    def cache_level(self):
        """The lowest unit level whose verified nodes are kept (the unit depth: none)."""
        return self.paths.cache_level

    @property
    def cache_bytes(self):
        """The memory the verified node cache may take (it is allocated at the first proof)."""
        return self.paths.cache_bytes

    def forget(self):
        """Drop the verified node cache (for tests: the next proofs read every record again)."""
        with self.lock:
            self.paths.forget()
            self._warm_at = (self.shape.unit_depth - 1, 0)

    def warm(self, pairs=WARM_PAIRS):
        """Fill the verified node cache ahead of the proofs, `pairs` stored node pairs a call,
        top down (unit level k-1 of every unit, then k-2, ... down to cache_level): each pair is
        read once into a private copy, hashed and kept only if it equals its parent's verified
        copy. True while there is more to do. The daemon's proof server calls it when idle;
        filling the whole cache costs about (its nodes / 2) hashes (~1.4 s at most, of one core,
        in the kernel with the GIL released)."""
        with self.lock:
            level, start = self._warm_at
            if level < self.paths.cache_level:
                return False
            k, units = self.shape.unit_depth, self.shape.units
            total = units << (k - level - 1)
            count = min(pairs, total - start)
            children = self.paths.warm_pairs(level, start, count)
            parents = bytearray(self.record * count)
            try:
                _kernel.hash_level(children, count, self.n, self.code, parents)
                self.paths.warm_insert(level, start, count, children, parents)
            except _kernel.KernelError:
                pass             # a stored word is not a field element: leave these uncached
            start += count
            self._warm_at = (level - 1, 0) if start == total else (level, start)
            return self._warm_at[0] >= self.paths.cache_level

    # ---- finding entries --------------------------------------------------------------------

    def index_of(self, username):
        """The global leaf index of a username, or None."""
        return self.indices_of([username])[0]

    def indices_of(self, usernames):
        """The global leaf index of each username, or None where it is not in the tree.

        A username whose fingerprint the index holds, but only beside entries with another
        username, is either a fingerprint collision or damage: those entries are verified,
        and StoreError is raised when one does not verify."""
        found = self._lookup(usernames)
        for index in found:
            if isinstance(index, StoreError):
                raise index
        return found

    def _lookup(self, usernames):
        """indices_of(), with the StoreError of a username in its place instead of raised."""
        words, found = bytearray(), []
        for name in usernames:
            try:
                words += username_to_word(name, self.encoding)
                found.append(True)
            except ValueError:
                found.append(False)
        count = len(words) // WORD
        positions = array("q", bytes(8 * count))
        if count:
            prints = fingerprints(words, count, self.key)
            _records.find_positions(self.keys, self.positions, self.usernames, words, prints,
                                    positions)
        out, at = [], 0
        shape = self.shape
        single = len(shape.counts) == 1
        for name, valid in zip(usernames, found):
            if not valid:
                out.append(None)
                continue
            position = positions[at]
            at += 1
            try:
                if position >= 0 and self.names is not None and not self._holds(position, name):
                    position = -1     # another username with the same digest: not this one
            except StoreError as error:
                out.append(error)
                continue
            if position == -2:
                try:
                    self._suspects(name, prints[at - 1])
                except StoreError as error:
                    out.append(error)
                    continue
            out.append(None if position < 0 else position if single else shape.global_index(position))
        return out

    def _name_at(self, position):
        """The stored username bytes of an entry position (keccak256 only)."""
        ends = self.name_ends
        if not 0 <= position < len(ends):
            raise StoreError(f"{self.directory}: no stored username at position {position}")
        start, end = ends[position - 1] if position else 0, ends[position]
        if not start <= end <= len(self.names):
            raise StoreError(f"{self.directory}: name-ends.bin is damaged at position {position} "
                             f"(summa-proof --check names the file)")
        return bytes(self.names[start:end])

    def _holds(self, position, name):
        return self._name_at(position) == name.encode("utf-8")

    def _username(self, index, word):
        """The username of the entry at a global index, whose stored (verified) word is `word`;
        under keccak256 the stored name must hash to it, or the proof would not verify."""
        if self.names is None:
            return word_to_username(word)
        raw = self._name_at(self.shape.position(*self.shape.locate(index)))
        try:
            name = raw.decode("utf-8")
            if username_to_word(name, self.encoding) == bytes(word):
                return name
        except ValueError:
            pass
        raise StoreError(f"{self.directory}: the stored username of entry {index} does not hash "
                         f"to its word (names.bin is damaged; summa-proof --check names the file)")

    def _suspects(self, name, fingerprint):
        """The entries the index gives for a username's fingerprint hold another username:
        a collision when they verify, damage (StoreError) when they do not."""
        i = _records.lower_bound(self.keys, fingerprint)
        while i < len(self.keys) and self.keys[i] == fingerprint:
            position = self.positions[i]
            if position >= self.count:
                raise StoreError(f"{self.directory}: index-positions.bin names entry position "
                                 f"{position} of {self.count} (the store is damaged; "
                                 f"summa-proof --check names the file)")
            index = self.shape.global_index(position)
            _, _, _, errors = self._verified([index])
            if errors:
                raise StoreError(f"{self.directory}: the index gives entry {index} for "
                                 f"{name!r}, whose stored entry does not verify (the store is "
                                 f"damaged; summa-proof --check names the file)")
            i += 1

    # ---- proofs -------------------------------------------------------------------------------

    def proof(self, key):
        """The inclusion proof JSON of a username or global index, verified; KeyError or
        IndexError when there is no such entry; StoreError when the store is damaged."""
        return self.proofs([key])[0]

    def proofs(self, keys):
        """Many proofs (usernames or global indices), verified side by side; KeyError,
        IndexError or TypeError for a key with no entry, StoreError for a damaged one."""
        indices = self._indices(keys)
        for index in indices:
            if isinstance(index, (KeyError, IndexError, TypeError)):
                raise index
        out = self._answers(indices)
        for answer in out:
            if isinstance(answer, Exception):
                raise answer
        return out

    def proofs_or_errors(self, keys):
        """One answer per key, in order: the proof, or the exception it would raise (KeyError,
        IndexError, TypeError, StoreError): one bad or damaged key does not fail the others."""
        return self._answers(self._indices(keys))

    def proof_lines(self, keys):
        """The proofs of `keys` as JSON lines (json.dumps(proof, separators=(",", ":")) and a
        newline each) in one bytes, and each key's index (None where it has no entry);
        StoreError when one is damaged. The export's fast path (summa-proof --usernames)."""
        indices = self._indices(keys)
        for index in indices:
            if isinstance(index, (TypeError, StoreError)):
                raise index
        indices = [None if isinstance(index, Exception) else index for index in indices]
        wanted = [index for index in indices if index is not None]
        kept, siblings, entries, errors = self._verified(sorted(set(wanted)))
        if errors:
            raise next(iter(errors.values()))
        where = {index: i for i, index in enumerate(kept)}
        record = WORD * (1 + self.n)
        names = [encode_basestring_ascii(self._username(index, entries[record * i:record * i + WORD]))
                 .encode() for i, index in enumerate(kept)]
        text = _records.proof_lines(siblings, entries, array("Q", kept),
                                    array("q", [where[index] for index in wanted]), names,
                                    self.shape.depth, self.n, self._head, self._tail)
        return text, indices

    def _indices(self, keys):
        """Each key's global index, or the exception it raises (KeyError, IndexError,
        TypeError; StoreError where the index names an entry that does not verify)."""
        keys = list(keys)
        names = [key for key in keys if isinstance(key, str)]
        found = iter(self._lookup(names)) if names else None
        out = []
        for key in keys:
            try:
                out.append(self._resolve(key, next(found) if isinstance(key, str) else None))
            except (KeyError, IndexError, TypeError, StoreError) as error:
                out.append(error)
        return out

    def _answers(self, indices):
        """The proof of each index (an exception stays in its place), BATCH distinct indices
        walked together at a time, in ascending order."""
        unique = sorted({i for i in indices if not isinstance(i, Exception)})
        done = {}
        for start in range(0, len(unique), BATCH):
            kept, siblings, entries, errors = self._verified(unique[start:start + BATCH])
            done.update(errors)
            for i, index in enumerate(kept):
                done[index] = (i, siblings, entries)
        out = []
        for index in indices:
            answer = index if isinstance(index, Exception) else done[index]
            out.append(answer if isinstance(answer, Exception) else self._dict(index, *answer))
        return out

    def _resolve(self, key, index=None):
        if isinstance(key, str):
            if index is None:
                raise KeyError(f"username {key!r} is not in the tree")
            if isinstance(index, StoreError):
                raise index
            return index
        if type(key) is not int:
            raise TypeError(f"expected a username or an integer index, got {key!r}")
        self.shape.locate(key)
        return key

    def _verified(self, order):
        """Walk the paths of ascending distinct indices: (indices verified, their siblings,
        their entries, {index: StoreError} for the others). When a batch does not verify, each
        proof is walked alone: a damaged path refuses only the proofs that read it."""
        with self.lock:
            if not order:
                return [], b"", b"", {}
            batch = self._climb(order)
            if batch is not None and not batch.failures:
                siblings, entries = batch.emit()
                batch.remember()
                return order, siblings, entries, {}
            kept, siblings, entries, errors = [], bytearray(), bytearray(), {}
            for index in order:
                one = self._climb([index]) if len(order) > 1 else batch
                if one is None or one.failures:
                    why = "a stored word is not a field element; " if one is None else ""
                    errors[index] = StoreError(
                        f"{self.directory}: the stored path of entry {index} does not lead to "
                        f"the manifest's root ({why}the store is damaged: summa-proof --check "
                        f"names the file; or, where it finds none, a worker returned a wrong "
                        f"subtree that the result check did not sample)")
                    continue
                more, entry = one.emit()
                one.remember()
                kept.append(index)
                siblings += more
                entries += entry
            return kept, siblings, entries, errors

    def _climb(self, order):
        """The PathBatch of ascending distinct indices, hashed up to where every path stopped
        (at a verified node, equal or not); None when the kernel refused a stored word."""
        batch = _records.PathBatch(self.paths, array("Q", order))
        users, balances, count = batch.leaf_inputs()
        rec, n, code, h = self.record, self.n, self.code, self.paths.group_level
        leaves = bytearray(rec * count)
        try:
            _kernel.hash_leaves(users, balances, count, n, leaves)
            level1 = top = leaves
            if h >= 1:
                level1 = top = bytearray(rec * (count >> 1))
                _kernel.hash_level(leaves, count >> 1, n, code, level1)
            if h >= 2:
                top = None      # level 2 is stored: the climb checks the level-1 pairs against it
            batch.start(leaves, level1, top)
            children, parents = batch.climb()      # every pair of every path, in one call
            if parents:
                out = bytearray(rec * parents)
                _kernel.hash_level(children, parents, n, code, out)
                batch.push(out)
            return batch
        except _kernel.KernelError:
            return None

    def _dict(self, index, i, siblings, entries):
        """The proof dict of the i-th verified index of a walk, from its emitted records."""
        n, depth = self.n, self.shape.depth
        at = WORD * (1 + n) * i
        root_hash, root_balances = self._root
        return {
            "layout": self.layout, "n_currencies": n,
            "username_encoding": self.encoding, "is_sorted": self.is_sorted,
            "entry": {"username": self._username(index, entries[at:at + WORD]),
                      "balances": _records.decimals(entries, at + WORD, n)},
            "index": index,
            "path": _records.path_nodes(siblings, self.record * depth * i, depth, n),
            "path_indices": [(index >> level) & 1 for level in range(depth)],
            "root": {"hash": root_hash, "balances": list(root_balances)},
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

    def proofs_or_errors(self, keys):
        out = []
        for key in keys:
            try:
                out.append(self.proof(key))
            except (KeyError, IndexError, TypeError, ValueError) as error:
                out.append(error)
        return out

