"""RFC 6962 Merkle tree hashing over the ledger (the Certificate Transparency tree).

    leaf_hash(d)    = SHA-256(0x00 || d)         d = a record's record_hash
    node_hash(l, r) = SHA-256(0x01 || l || r)
    MTH([])         = SHA-256("")
    MTH(D[n])       = node_hash(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n

Using the standard tree (not a home-grown one) means any RFC 6962 / RFC 9162 verifier can
check our roots and proofs. Every function below takes *leaf hashes* (already prefixed),
so a proof never depends on how the leaf data was stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from kizuna_consent.domain.errors import ConsentError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): RFC 6962's k, not the midpoint."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """A streaming root: the roots of the perfect subtrees covering leaves [0, size), one per
    set bit of size, largest first. Appending is amortised O(1), memory O(log n), so a
    verifier can walk millions of records; (size, peaks) can be persisted and resumed."""

    __slots__ = ("_peaks", "_size")

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        if size < 0 or len(peaks) != size.bit_count():
            raise InvalidTree(
                f"a compact range of size {size} needs {max(size, 0).bit_count()} "
                f"peaks, got {len(peaks)}"
            )
        self._size = size
        self._peaks = [bytes(p) for p in peaks]

    @property
    def size(self) -> int:
        return self._size

    @property
    def peaks(self) -> tuple[bytes, ...]:
        return tuple(self._peaks)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash; equal-sized subtrees merge like a binary counter's carries."""
        merged = leaf
        size = self._size
        while size & 1:
            merged = node_hash(self._peaks.pop(), merged)
            size >>= 1
        self._peaks.append(merged)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves so far: the peaks folded from the right (smallest first)."""
        if not self._peaks:
            return EMPTY_ROOT
        root = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            root = node_hash(peak, root)
        return root


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    tree = CompactRange()
    for leaf in leaf_hashes:
        tree.append(leaf)
    return tree.root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(index, D[tree_size]), leaf to root. Reads only leaf_hashes[:tree_size],
    so `leaf_hashes` may be a longer ledger or a lazy sequence backed by storage."""
    if not 0 <= index < tree_size <= len(leaf_hashes):
        raise InvalidTree(
            f"no leaf {index} in a tree of size {tree_size} ({len(leaf_hashes)} leaves known)"
        )
    return _path(leaf_hashes, 0, tree_size, index)


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` show leaf hash `leaf` at `index` under `root`?"""
    if not 0 <= index < tree_size or not _all_hashes([leaf, root, *proof]):
        return False
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(old_size, D[new_size]): the tree of old_size is a prefix of it."""
    if not 0 <= old_size <= new_size <= len(leaf_hashes):
        raise InvalidTree(
            f"no consistency proof from size {old_size} to {new_size} "
            f"({len(leaf_hashes)} leaves known)"
        )
    if old_size in (0, new_size):
        return []
    return _subproof(leaf_hashes, 0, new_size, old_size, complete=True)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (old_size, old_root) a prefix of (new_size, new_root)?"""
    if not 0 <= old_size <= new_size or not _all_hashes([old_root, new_root, *proof]):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size.bit_count() == 1:  # the old tree is a complete subtree: its root starts it
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def _subtree_root(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    return root_of(leaves[i] for i in range(lo, hi))


def _path(leaves: Sequence[bytes], lo: int, hi: int, m: int) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = split_point(n)
    if m - lo < k:
        return [*_path(leaves, lo, lo + k, m), _subtree_root(leaves, lo + k, hi)]
    return [*_path(leaves, lo + k, hi, m), _subtree_root(leaves, lo, lo + k)]


def _subproof(leaves: Sequence[bytes], lo: int, hi: int, m: int, complete: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if complete else [_subtree_root(leaves, lo, hi)]
    k = split_point(n)
    if m <= k:
        return [*_subproof(leaves, lo, lo + k, m, complete), _subtree_root(leaves, lo + k, hi)]
    return [*_subproof(leaves, lo + k, hi, m - k, False), _subtree_root(leaves, lo, lo + k)]


def _all_hashes(values: Iterable[bytes]) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


class InvalidTree(ConsentError):
    pass
