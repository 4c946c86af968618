"""RFC 6962 Merkle hashing: the Certificate Transparency vectors, and a naive recursive
implementation of the RFC's definitions as the oracle for random sizes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna_consent.domain.merkle import (
    EMPTY_ROOT,
    CompactRange,
    InvalidTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    split_point,
    verify_consistency,
    verify_inclusion,
)

# Certificate Transparency reference data (transparency-dev/merkle testonly, RFC 6962 trees).
CT_DATA = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_LEAVES = [leaf_hash(d) for d in CT_DATA]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
H_96A = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
H_5F0 = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
H_6B4 = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
H_BC1 = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
H_CA8 = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"
H_0EB = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"
CT_INCLUSION = [
    (0, 1, []),
    (0, 8, [H_96A, H_5F0, H_6B4]),
    (5, 8, [H_BC1, H_CA8, CT_ROOTS[4]]),
    (2, 3, [CT_ROOTS[2]]),
    (1, 5, [CT_ROOTS[1], H_5F0, H_BC1]),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, [H_96A, H_5F0, H_6B4]),
    (2, 8, [H_5F0, H_6B4]),
    (6, 8, [H_0EB, H_CA8, CT_ROOTS[4]]),
    (2, 5, [H_5F0, H_BC1]),
]


# --- a naive implementation of RFC 6962 §2.1, straight from the text --------------------


def naive_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = naive_k(len(leaves))
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = naive_k(len(leaves))
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [naive_mth(leaves)]
    k = naive_k(n)
    if m <= k:
        return [*naive_subproof(m, leaves[:k], b), naive_mth(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_mth(leaves[:k])]


def leaves_of(n: int, salt: int = 0) -> list[bytes]:
    return [leaf_hash(f"{salt}:{i}".encode()) for i in range(n)]


def hexes(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


# --- reference vectors -------------------------------------------------------------------


def test_hash_prefixes() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    a, b = b"a" * 32, b"b" * 32
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert node_hash(a, b) != node_hash(b, a)


def test_empty_tree_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert root_of([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_ct_roots(size: int) -> None:
    assert root_of(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_ct_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    assert hexes(inclusion_proof(CT_LEAVES, index, size)) == proof
    root = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(CT_LEAVES[index], index, size, [bytes.fromhex(p) for p in proof], root)


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    assert hexes(consistency_proof(CT_LEAVES, old, new)) == proof
    old_root, new_root = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
    assert verify_consistency(old, new, old_root, new_root, [bytes.fromhex(p) for p in proof])


@pytest.mark.parametrize(
    ("n", "k"), [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512), (2**40 + 1, 2**40)]
)
def test_split_point_is_the_largest_power_of_two_below(n: int, k: int) -> None:
    # Not the midpoint: a midpoint split builds a different, non-interoperable tree.
    assert split_point(n) == k


# --- against the naive oracle -------------------------------------------------------------


@settings(max_examples=60)
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=2**16))
def test_streaming_root_matches_naive_for_every_prefix(n: int, salt: int) -> None:
    leaves = leaves_of(n, salt)
    tree = CompactRange()
    for i, leaf in enumerate(leaves):
        tree.append(leaf)
        assert tree.root() == naive_mth(leaves[: i + 1])
    assert tree.size == n
    assert len(tree.peaks) == bin(n).count("1")


@settings(max_examples=80)
@given(st.data())
def test_inclusion_proofs_match_naive_and_verify(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=300), label="tree_size")
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    extra = data.draw(st.integers(min_value=0, max_value=5), label="later leaves")
    leaves = leaves_of(n + extra)
    proof = inclusion_proof(leaves, index, n)
    assert proof == naive_path(index, leaves[:n])
    root = naive_mth(leaves[:n])
    assert verify_inclusion(leaves[index], index, n, proof, root)
    assert not verify_inclusion(leaf_hash(b"other"), index, n, proof, root)
    if n > 1:
        assert not verify_inclusion(leaves[index], (index + 1) % n, n, proof, root)


@settings(max_examples=80)
@given(st.data())
def test_consistency_proofs_match_naive_and_verify(data: st.DataObject) -> None:
    new = data.draw(st.integers(min_value=1, max_value=300), label="new_size")
    old = data.draw(st.integers(min_value=1, max_value=new), label="old_size")
    leaves = leaves_of(new)
    proof = consistency_proof(leaves, old, new)
    assert proof == (naive_subproof(old, leaves, True) if old < new else [])
    old_root, new_root = naive_mth(leaves[:old]), naive_mth(leaves)
    assert verify_consistency(old, new, old_root, new_root, proof)
    if old < new:
        assert not verify_consistency(old, new, root_of(leaves_of(old, 1)), new_root, proof)


def test_every_inclusion_proof_in_small_trees_and_its_mangled_forms() -> None:
    leaves = leaves_of(40)
    for n in range(1, 41):
        root = root_of(leaves[:n])
        for i in range(n):
            proof = inclusion_proof(leaves, i, n)
            assert verify_inclusion(leaves[i], i, n, proof, root), (i, n)
            assert not verify_inclusion(leaves[(i + 1) % 40], i, n, proof, root)
            assert not verify_inclusion(leaves[i], i, n, proof, leaf_hash(b"x"))
            if proof:
                flipped = [*proof[:-1], bytes([proof[-1][0] ^ 1]) + proof[-1][1:]]
                assert not verify_inclusion(leaves[i], i, n, flipped, root)
                assert not verify_inclusion(leaves[i], i, n, proof[:-1], root)
            assert not verify_inclusion(leaves[i], i, n, [*proof, b"\xab" * 32], root)


def test_every_consistency_proof_in_small_trees_and_its_mangled_forms() -> None:
    leaves = leaves_of(33)
    roots = [root_of(leaves[:n]) for n in range(34)]
    for new in range(0, 34):
        for old in range(0, new + 1):
            proof = consistency_proof(leaves, old, new)
            assert verify_consistency(old, new, roots[old], roots[new], proof), (old, new)
            if 0 < old < new:
                assert not verify_consistency(old, new, roots[old], roots[new], proof[:-1])
                assert not verify_consistency(
                    old, new, roots[old], roots[new], [*proof, b"\xcd" * 32]
                )
                assert not verify_consistency(old, new, roots[old - 1], roots[new], proof)
                assert not verify_consistency(old, new, roots[old], roots[new - 1], proof)


@pytest.mark.parametrize(
    ("leaf", "index", "size", "root"),
    [
        (CT_LEAVES[5], 8, 8, CT_ROOTS[8]),
        (CT_LEAVES[5], -1, 8, CT_ROOTS[8]),
        (b"\x00" * 31, 5, 8, CT_ROOTS[8]),
        (CT_LEAVES[5], 5, 8, CT_ROOTS[8][:62]),
    ],
)
def test_verify_inclusion_rejects_malformed_input(
    leaf: bytes, index: int, size: int, root: str
) -> None:
    proof = inclusion_proof(CT_LEAVES, 5, 8)
    assert not verify_inclusion(leaf, index, size, proof, bytes.fromhex(root))


def test_verify_consistency_degenerate_cases() -> None:
    r4, r5 = root_of(CT_LEAVES[:4]), root_of(CT_LEAVES[:5])
    assert verify_consistency(4, 4, r4, r4, [])
    assert not verify_consistency(4, 4, r4, r5, [])
    assert not verify_consistency(4, 4, r4, r4, [r4])
    assert verify_consistency(0, 8, EMPTY_ROOT, root_of(CT_LEAVES), [])
    assert not verify_consistency(0, 8, r4, root_of(CT_LEAVES), [])
    assert not verify_consistency(5, 4, r5, r4, [])
    assert not verify_consistency(4, 5, r4, r5, [])


@pytest.mark.parametrize(("index", "size"), [(8, 8), (-1, 8), (0, 9), (0, 0)])
def test_inclusion_proof_refuses_leaves_it_does_not_have(index: int, size: int) -> None:
    with pytest.raises(InvalidTree, match="no leaf"):
        inclusion_proof(CT_LEAVES, index, size)


@pytest.mark.parametrize(("old", "new"), [(5, 3), (0, 9), (-1, 2)])
def test_consistency_proof_refuses_impossible_sizes(old: int, new: int) -> None:
    with pytest.raises(InvalidTree, match="no consistency proof"):
        consistency_proof(CT_LEAVES, old, new)


def test_compact_range_resumes_from_its_persisted_state() -> None:
    leaves = leaves_of(77)
    first = CompactRange()
    for leaf in leaves[:45]:
        first.append(leaf)
    resumed = CompactRange(first.size, first.peaks)
    for leaf in leaves[45:]:
        resumed.append(leaf)
    assert resumed.root() == root_of(leaves)


@pytest.mark.parametrize(("size", "count"), [(3, 1), (4, 0), (0, 1), (-1, 0)])
def test_compact_range_refuses_a_state_of_the_wrong_shape(size: int, count: int) -> None:
    with pytest.raises(InvalidTree, match="compact range"):
        CompactRange(size, [b"\x00" * 32] * count)
