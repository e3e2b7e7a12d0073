"""Where every entry and every work unit sits in a job's tree (SPEC section 3).

The layout is the contract's: batches (one per CSV, or fixed 2^d cuts) of counts c_b, every
mini-tree of depth d, their m roots under a top tree of depth t = ceil(log2 m); an entry's
global index is b * 2^d + local. The work unit is the daemon's: an aligned 2^k slice of one
mini-tree (k <= d). A unit holding entries is "real" and numbered in input order (its serial);
a unit slot past a batch's end holds only padding, is never built, and its root is the
all-zero subtree of depth k. Entries are stored compactly in input order: the entry at
(b, local) is at position prefix[b] + local.
"""
import bisect

from .limits import depth_for, tree_bytes

MIN_UNIT_DEPTH = 10      # below this, per-unit messages and checks cost more than the hashing
MAX_UNIT_DEPTH = 16      # 2^16 entries: ~0.6 s of kernel work, ~12 MB of worker memory
UNITS_PER_WORKER = 8     # enough units that the last ones finish close together
MAX_UNIT_BYTES = 64 << 20    # a unit's subtree as a worker returns it (many currencies: fewer entries)
MAX_SET_UNIT_DEPTH = 20  # the most a configuration may ask for


def default_unit_depth(estimated_entries, workers, n_currencies=1):
    """The unit rule of the README: 8+ units per worker, 2^10..2^16 entries per unit, and a
    returned subtree of at most 64 MiB."""
    share = max(estimated_entries // (UNITS_PER_WORKER * max(workers, 1)), 1)
    depth = min(max(share.bit_length() - 1, MIN_UNIT_DEPTH), MAX_UNIT_DEPTH)
    while depth and tree_bytes(depth, max(n_currencies, 1)) > MAX_UNIT_BYTES:
        depth -= 1
    return depth


class TreeShape:
    """The counts of a job's batches, its mini-tree depth d and its unit depth k."""

    def __init__(self, counts, mini_depth, unit_depth):
        if not counts or min(counts) < 1 or max(counts) > 1 << mini_depth:
            raise ValueError("every batch needs 1 to 2^mini_depth entries")
        if not 0 <= unit_depth <= mini_depth:
            raise ValueError(f"unit depth {unit_depth} must be from 0 to the mini depth {mini_depth}")
        self.counts, self.mini_depth, self.unit_depth = list(counts), mini_depth, unit_depth
        self.top_depth = depth_for(len(self.counts))
        self.depth = self.mini_depth + self.top_depth
        self.prefix, self.units_before = [0], [0]
        for count in self.counts:
            self.prefix.append(self.prefix[-1] + count)
            self.units_before.append(self.units_before[-1] + self.units_in(count))
        self.entries, self.units = self.prefix[-1], self.units_before[-1]

    def units_in(self, count):
        return -(-count // (1 << self.unit_depth))

    @property
    def upper_depth(self):
        """Depth of the tree over every unit slot: its level d - k holds the mini-tree roots."""
        return self.depth - self.unit_depth

    def unit_slots(self):
        """(slot in the upper tree's leaf level, serial) of every real unit, in serial order."""
        shift = self.mini_depth - self.unit_depth
        for b, count in enumerate(self.counts):
            first = self.units_before[b]
            for j in range(self.units_in(count)):
                yield (b << shift) + j, first + j

    def locate(self, index):
        """(batch, local) of a global leaf index that holds an entry; IndexError otherwise."""
        batch, local = divmod(index, 1 << self.mini_depth) if index >= 0 else (-1, 0)
        if not 0 <= batch < len(self.counts) or local >= self.counts[batch]:
            raise IndexError(f"no entry at global index {index}")
        return batch, local

    def position(self, batch, local):
        return self.prefix[batch] + local

    def global_index(self, position):
        """The global leaf index of the entry stored at `position`."""
        if not 0 <= position < self.entries:
            raise IndexError(f"no entry at position {position}")
        batch = bisect.bisect_right(self.prefix, position) - 1
        return (batch << self.mini_depth) + position - self.prefix[batch]

    def serial(self, batch, local):
        """The serial of the real unit holding entry (batch, local)."""
        return self.units_before[batch] + (local >> self.unit_depth)
