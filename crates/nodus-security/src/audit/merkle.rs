//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.
//!
//! Leaf hash `SHA-256(0x00 ‖ data)`, node hash `SHA-256(0x01 ‖ left ‖ right)`; the root of `n > 1`
//! leaves splits at `k`, the largest power of two smaller than `n`. [`Tree`] keeps every complete
//! subtree hash, so an append is amortised O(1), and a root, an inclusion proof or a consistency
//! proof for any size costs O(log² n) hash lookups and at most O(log n) hash computations.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (`n ≥ 2`).
fn split(n: u64) -> u64 {
    let mut k = 1u64;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// An append-only Merkle tree holding every complete subtree hash: `levels[l][i]` is the hash of
/// leaves `[i·2^l, (i+1)·2^l)`.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

/// Why a tree query was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// The requested size is larger than the tree.
    #[error("size {size} is larger than the tree ({len} leaves)")]
    SizeTooLarge {
        /// Requested size.
        size: u64,
        /// Leaves in the tree.
        len: u64,
    },
    /// The index is not below the size.
    #[error("index {index} is not below size {size}")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// A consistency proof needs `0 < size1 ≤ size2`.
    #[error("a consistency proof needs 0 < size1 ≤ size2 (got {size1}, {size2})")]
    BadSizes {
        /// First size.
        size1: u64,
        /// Second size.
        size2: u64,
    },
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// `true` when the tree has no leaf.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a leaf hash, completing every subtree it closes.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let mut level = 0usize;
        let mut hash = leaf;
        while let Some(row) = self.levels.get_mut(level) {
            row.push(hash);
            let n = row.len();
            if n % 2 != 0 {
                break;
            }
            let (Some(l), Some(r)) = (row.get(n - 2), row.get(n - 1)) else {
                break;
            };
            hash = node_hash(l, r);
            level += 1;
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
        }
    }

    /// Appends leaf hashes.
    pub fn extend(&mut self, leaves: impl IntoIterator<Item = Hash>) {
        for l in leaves {
            self.push(l);
        }
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
    }

    /// MTH of leaves `[start, start + n)`, `n ≥ 1`, all below `len()`.
    fn subtree(&self, start: u64, n: u64) -> Hash {
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            if let Some(h) = self
                .levels
                .get(level)
                .and_then(|row| row.get((start >> level) as usize))
            {
                return *h;
            }
        }
        if n <= 1 {
            return self.leaf(start).unwrap_or_else(empty_root);
        }
        let k = split(n);
        node_hash(&self.subtree(start, k), &self.subtree(start + k, n - k))
    }

    /// The root of the first `size` leaves.
    ///
    /// # Errors
    /// [`TreeError::SizeTooLarge`].
    pub fn root(&self, size: u64) -> Result<Hash, TreeError> {
        if size > self.len() {
            return Err(TreeError::SizeTooLarge {
                size,
                len: self.len(),
            });
        }
        Ok(if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        })
    }

    /// The RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
    ///
    /// # Errors
    /// [`TreeError`] for a size beyond the tree or an index not below the size.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        if size > self.len() {
            return Err(TreeError::SizeTooLarge {
                size,
                len: self.len(),
            });
        }
        if index >= size {
            return Err(TreeError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out);
            out.push(self.subtree(start + k, n - k));
        } else {
            self.path(m - k, start + k, n - k, out);
            out.push(self.subtree(start, k));
        }
    }

    /// The RFC 9162 consistency proof between the trees of `size1` and `size2` leaves.
    ///
    /// # Errors
    /// [`TreeError`] unless `0 < size1 ≤ size2 ≤ len()`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, TreeError> {
        if size2 > self.len() {
            return Err(TreeError::SizeTooLarge {
                size: size2,
                len: self.len(),
            });
        }
        if size1 == 0 || size1 > size2 {
            return Err(TreeError::BadSizes { size1, size2 });
        }
        let mut proof = Vec::new();
        self.subproof(size1, 0, size2, true, &mut proof);
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, n: u64, whole: bool, out: &mut Vec<Hash>) {
        if m == n {
            if !whole {
                out.push(self.subtree(start, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, whole, out);
            out.push(self.subtree(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, out);
            out.push(self.subtree(start, k));
        }
    }
}

/// The root of a list of leaf hashes (RFC 6962 MTH).
pub fn root_of(leaves: &[Hash]) -> Hash {
    let mut t = Tree::new();
    for l in leaves {
        t.push(*l);
    }
    t.root(t.len()).unwrap_or_else(|_| empty_root())
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2). Rejects an index not below the size, a proof
/// of the wrong length and extra proof elements.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2). Rejects `size1 == 0`, `size1 > size2`, wrong
/// lengths and extra elements; `size1 == size2` needs an empty proof and equal roots.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> bool {
    if size1 == 0 || size1 > size2 {
        return false;
    }
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if size1.is_power_of_two() {
        path.insert(0, *root1);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *root1 && sr == *root2 && sn == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The standard 8-leaf test tree of the Certificate Transparency test suites.
    fn ct_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    fn ct_tree() -> Tree {
        let mut t = Tree::new();
        for l in ct_leaves() {
            t.push(leaf_hash(&l));
        }
        t
    }

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn known_answers_rfc6962() {
        assert_eq!(
            empty_root(),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(
            leaf_hash(b""),
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        let t = ct_tree();
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        for (i, r) in roots.iter().enumerate() {
            assert_eq!(t.root(i as u64 + 1).unwrap(), h(r), "size {}", i + 1);
        }
        assert_eq!(t.root(0).unwrap(), empty_root());
        assert!(t.root(9).is_err());
    }

    #[test]
    fn standard_inclusion_proofs() {
        let t = ct_tree();
        // From the CT test suite: (index, size, proof).
        let cases: [(u64, u64, &[&str]); 4] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (index, size, expected) in cases {
            let proof = t.inclusion_proof(index, size).unwrap();
            let expected: Vec<Hash> = expected.iter().map(|s| h(s)).collect();
            assert_eq!(proof, expected, "index {index} size {size}");
            let leaf = t.leaf(index).unwrap();
            let root = t.root(size).unwrap();
            assert!(verify_inclusion(&leaf, index, size, &proof, &root));
            // Negative cases: flipped bit, trailing extra element, wrong size, wrong index.
            if let Some(first) = proof.first() {
                let mut bad = proof.clone();
                bad[0][0] ^= 1;
                assert!(!verify_inclusion(&leaf, index, size, &bad, &root));
                let _ = first;
            }
            let mut extra = proof.clone();
            extra.push(root);
            assert!(!verify_inclusion(&leaf, index, size, &extra, &root));
            assert!(!verify_inclusion(&leaf, index, size + 1, &proof, &root));
            assert!(!verify_inclusion(&leaf, size, size, &proof, &root));
        }
    }

    #[test]
    fn standard_consistency_proofs() {
        let t = ct_tree();
        let cases: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (s1, s2, expected) in cases {
            let proof = t.consistency_proof(s1, s2).unwrap();
            let expected: Vec<Hash> = expected.iter().map(|s| h(s)).collect();
            assert_eq!(proof, expected, "{s1} -> {s2}");
            let (r1, r2) = (t.root(s1).unwrap(), t.root(s2).unwrap());
            assert!(verify_consistency(s1, s2, &r1, &r2, &proof));
            if !proof.is_empty() {
                let mut bad = proof.clone();
                bad[0][31] ^= 0x80;
                assert!(!verify_consistency(s1, s2, &r1, &r2, &bad));
            }
            let mut extra = proof.clone();
            extra.push(r1);
            assert!(!verify_consistency(s1, s2, &r1, &r2, &extra));
            assert!(
                !verify_consistency(0, s2, &r1, &r2, &proof),
                "size1 = 0 must be rejected"
            );
            // A wrong size2 is rejected (sizes whose proofs share a shape, like 7 and 8 from size
            // 6, cannot be told apart by the proof alone: the signed root binds the size).
            if s1 != s2 {
                assert!(
                    !verify_consistency(s1, s2 * 2, &r1, &r2, &proof),
                    "{s1} -> {} accepted",
                    s2 * 2
                );
            }
        }
        assert_eq!(
            t.consistency_proof(0, 3),
            Err(TreeError::BadSizes { size1: 0, size2: 3 })
        );
    }

    proptest! {
        #[test]
        fn every_inclusion_and_consistency_proof_verifies(n in 1u64..200, seed in any::<u64>()) {
            let mut t = Tree::new();
            for i in 0..n {
                t.push(leaf_hash(&(i ^ seed).to_be_bytes()));
            }
            let index = seed % n;
            let size = index + 1 + (seed / 7) % (n - index);
            let p = t.inclusion_proof(index, size).unwrap();
            prop_assert!(verify_inclusion(&t.leaf(index).unwrap(), index, size, &p, &t.root(size).unwrap()));
            let s1 = 1 + seed % n;
            let c = t.consistency_proof(s1, n).unwrap();
            prop_assert!(verify_consistency(s1, n, &t.root(s1).unwrap(), &t.root(n).unwrap(), &c));
            // The incremental tree agrees with a from-scratch computation.
            let leaves: Vec<Hash> = (0..size).map(|i| t.leaf(i).unwrap()).collect();
            prop_assert_eq!(root_of(&leaves), t.root(size).unwrap());
        }
    }
}
