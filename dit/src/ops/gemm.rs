//! The one GEMM entry point of the fused kernels: strided matrix views whose constructors check
//! them against their buffers, and a safe `gemm` over them that checks the shapes agree.
//!
//! `gemm::gemm` takes nineteen raw arguments (pointers and signed strides) and trusts them all;
//! every kernel here goes through `gemm` below instead, so an index out of range is a panic
//! naming the operand, never a read or write outside a buffer.

use std::marker::PhantomData;

use rayon::prelude::*;

use super::Float;

/// Threads for one GEMM: the current rayon pool's size (a sweep worker's own pool, or the
/// global one), or none when the caller already parallelises.
pub(crate) fn gemm_threads() -> ::gemm::Parallelism {
    match rayon::current_num_threads() {
        1 => ::gemm::Parallelism::None,
        n => ::gemm::Parallelism::Rayon(n),
    }
}

/// The number of elements a `rows x cols` view with these strides spans (0 when empty).
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// A read-only `rows x cols` matrix inside a slice: element (i, j) is `data[i * rs + j * cs]`.
pub(crate) struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

// A shared view is copied whatever T is (derive would ask T: Copy).
impl<T> Clone for MatRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatRef<'_, T> {}

impl<'a, T> MatRef<'a, T> {
    /// Panics when the view reaches past the end of `data`.
    pub fn new(data: &'a [T], (rows, cols): (usize, usize), (rs, cs): (usize, usize)) -> Self {
        let need = span(rows, cols, rs, cs);
        assert!(
            need <= data.len(),
            "gemm: a {rows}x{cols} operand with strides ({rs}, {cs}) needs {need} elements, has {}",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A row-major `rows x cols` matrix (row stride `cols`).
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, (rows, cols), (cols, 1))
    }

    /// The transpose: a stride swap, no copy.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A writable `rows x cols` matrix with unit column stride and row stride `rs >= cols`, so no two
/// of its elements coincide. It borrows its elements exclusively, like `&'a mut [T]`.
pub(crate) struct MatMut<'a, T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    rs: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `MatMut` is an exclusive borrow of its elements, as `&mut [T]` is (which is Send
// for T: Send); no other view reaches them while it lives.
unsafe impl<T: Send> Send for MatMut<'_, T> {}

impl<'a, T> MatMut<'a, T> {
    /// `rows x cols` with row stride `rs` inside `data`; panics when it does not fit or rows overlap.
    pub fn new(data: &'a mut [T], (rows, cols): (usize, usize), rs: usize) -> Self {
        let need = span(rows, cols, rs, 1);
        assert!(
            rows <= 1 || rs >= cols,
            "gemm: destination rows of {cols} overlap at row stride {rs}"
        );
        assert!(
            need <= data.len(),
            "gemm: a {rows}x{cols} destination with row stride {rs} needs {need} elements, has {}",
            data.len()
        );
        Self {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs,
            _borrow: PhantomData,
        }
    }

    /// A row-major `rows x cols` matrix filling `data`'s first `rows * cols` elements.
    pub fn rows(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self::new(data, (rows, cols), cols)
    }
}

/// Every (item, head) of an `[N, T, G * heads * hd]` buffer as `G` column blocks of `T x hd`:
/// block `g` of head `h` is columns `(g * heads + h) * hd ..` (the packed qkv layout for G = 3,
/// merged heads for G = 1). The blocks of different (item, head) pairs are disjoint, so the
/// attention kernels write them from parallel tasks; item `i` is (item `i / heads`, head `i % heads`).
pub(crate) fn head_blocks<T: Send + Sync, const G: usize>(
    data: &mut [T],
    (n, t, heads, hd): (usize, usize, usize, usize),
) -> impl IndexedParallelIterator<Item = [MatMut<'_, T>; G]> {
    let width = G * heads * hd;
    assert_eq!(
        data.len(),
        n * t * width,
        "gemm: head blocks of a buffer of the wrong size"
    );
    let base = SendPtr(data.as_mut_ptr());
    (0..n * heads).into_par_iter().map(move |i| {
        let (b, h) = (i / heads, i % heads);
        std::array::from_fn(|g| {
            let offset = b * t * width + (g * heads + h) * hd;
            // Sound as an exclusive view: the block's last element, offset + (t - 1) * width + hd - 1,
            // is below (b + 1) * t * width <= data.len(); the range yields each i once, and blocks
            // of distinct (b, h, g) share no element, so each view is the only one over its
            // elements for as long as `data` stays borrowed. (Empty views are never dereferenced.)
            MatMut {
                ptr: base.get().wrapping_add(offset),
                rows: t,
                cols: hd,
                rs: width,
                _borrow: PhantomData,
            }
        })
    })
}

/// A buffer's base pointer, shared by the tasks of `head_blocks` (each derives disjoint views).
struct SendPtr<T>(*mut T);
// A pointer is copied whatever T is (derive would ask T: Copy).
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: only used by `head_blocks`, whose tasks write disjoint elements.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// `dst = scale * lhs . rhs`, or `dst += scale * lhs . rhs` with `accumulate`. Panics when the
/// shapes do not multiply; the views' constructors have checked them against their buffers.
pub(crate) fn gemm<T: Float + 'static>(
    dst: MatMut<'_, T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    scale: T,
    accumulate: bool,
    threads: ::gemm::Parallelism,
) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "gemm: {}x{} . {}x{} into {m}x{n}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    // SAFETY: each view lies inside its buffer (checked when it was made); `dst` is an exclusive
    // borrow with distinct elements, so it aliases neither operand nor itself.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            1,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { T::one() } else { T::zero() },
            scale,
            false,
            false,
            false,
            threads,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], (m, n, k): (usize, usize, usize)) -> Vec<f64> {
        (0..m * n)
            .map(|ij| (0..k).map(|l| a[ij / n * k + l] * b[l * n + ij % n]).sum())
            .collect()
    }

    #[test]
    fn strided_views_multiply() {
        let a: Vec<f64> = (0..12).map(|v| v as f64 * 0.5 - 2.0).collect(); // 3x4
        let b: Vec<f64> = (0..20).map(|v| 1.0 - v as f64 * 0.25).collect(); // 4x5
        let want = naive(&a, &b, (3, 5, 4));
        let mut out = vec![0.0; 15];
        gemm(
            MatMut::rows(&mut out, 3, 5),
            MatRef::rows(&a, 3, 4),
            MatRef::rows(&b, 4, 5),
            1.0,
            false,
            ::gemm::Parallelism::None,
        );
        assert_eq!(out, want);
        // The same product from transposed storage, accumulated onto a bias with scale 2.
        let at: Vec<f64> = (0..12).map(|i| a[i % 3 * 4 + i / 3]).collect(); // 4x3 = A^T
        let mut acc = vec![1.0; 15];
        gemm(
            MatMut::rows(&mut acc, 3, 5),
            MatRef::rows(&at, 4, 3).t(),
            MatRef::rows(&b, 4, 5),
            2.0,
            true,
            ::gemm::Parallelism::None,
        );
        for (g, w) in acc.iter().zip(&want) {
            assert!((g - (1.0 + 2.0 * w)).abs() < 1e-12);
        }
    }

    #[test]
    fn column_blocks_cover_the_buffer_once() {
        let (n, t, heads, hd) = (2, 3, 2, 2);
        let mut buf = vec![0.0f64; n * t * 3 * heads * hd];
        let one = [1.0f64];
        head_blocks::<f64, 3>(&mut buf, (n, t, heads, hd)).for_each(|blocks| {
            for dst in blocks {
                let ones = vec![1.0; dst.rows * dst.cols];
                gemm(
                    dst,
                    MatRef::new(&one, (t, 1), (0, 0)),
                    MatRef::rows(&ones, 1, hd),
                    1.0,
                    true,
                    ::gemm::Parallelism::None,
                );
            }
        });
        assert!(buf.iter().all(|&v| v == 1.0), "{buf:?}");
    }

    #[test]
    #[should_panic(expected = "needs 13 elements")]
    fn a_view_past_its_buffer_panics() {
        let a = [0.0f64; 12];
        let _ = MatRef::new(&a, (3, 4), (4, 1)).t();
        let _ = MatRef::new(&a, (4, 4), (3, 1));
    }

    #[test]
    #[should_panic(expected = "into 3x5")]
    fn mismatched_shapes_panic() {
        let (a, b) = ([0.0f64; 12], [0.0f64; 15]);
        let mut out = [0.0f64; 15];
        gemm(
            MatMut::rows(&mut out, 3, 5),
            MatRef::rows(&a, 3, 4),
            MatRef::rows(&b, 3, 5),
            1.0,
            false,
            ::gemm::Parallelism::None,
        );
    }
}
