//! A minimal reader of TorchScript archives (`torch.jit.save`): a zip holding `<root>/data.pkl`
//! (the module tree, pickled), `<root>/code/` (its Python) and `<root>/data/<n>` (raw tensor
//! storages, little-endian).
//!
//! `candle_core::pickle::read_all` only reads `torch.save` checkpoints whose pickle is a state
//! dict (or a `__torch__.Module`); a TorchScript `data.pkl` is a tree of objects such as
//! `__torch__.inceptionv3.Conv2dLayer` (`NEWOBJ` + `BUILD` with a dict of attributes). This module
//! uses candle's pickle virtual machine and walks that tree itself: tensors are named by their
//! attribute path (`net.layers.mixed_3.conv.weight`), and integer / integer-list attributes
//! (`stride`, `padding`) are kept too, so callers can check the architecture they assume.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use anyhow::{bail, ensure, Context, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

/// The tensors and the integer attributes of a TorchScript module tree.
#[derive(Debug, Default)]
pub struct ScriptModule {
    /// `path.to.attr` -> tensor (f32 on the CPU, contiguous).
    pub tensors: BTreeMap<String, Tensor>,
    /// `path.to.attr` -> integer (`stride`) or integer list (`padding: List[int]`).
    pub ints: BTreeMap<String, Vec<i64>>,
    /// `path.to.module` -> `module.ClassName` (e.g. `__torch__.inceptionv3.Conv2dLayer`).
    pub classes: BTreeMap<String, String>,
}

/// Read a TorchScript archive held in memory. `origin` names it in errors.
pub fn read(bytes: &[u8], origin: &str) -> Result<ScriptModule> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .with_context(|| format!("{origin}: not a zip archive (TorchScript files are zips)"))?;
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(|n| n.into_owned())
        .with_context(|| format!("{origin}: no `<root>/data.pkl` in the archive"))?;
    let root = pkl_name.trim_end_matches("/data.pkl").to_owned();
    let pkl = read_entry(&mut zip, &pkl_name, origin)?;
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut Cursor::new(&pkl))
        .with_context(|| format!("{origin}: cannot unpickle {pkl_name}"))?;
    let obj = stack
        .finalize()
        .with_context(|| format!("{origin}: {pkl_name} leaves no object"))?;

    let mut out = ScriptModule::default();
    let mut pending = Vec::new();
    walk(obj, "", &mut out, &mut pending, origin)?;
    for (name, info) in pending {
        let storage = read_entry(&mut zip, &format!("{root}/data/{}", info.key), origin)?;
        let t = tensor_from_storage(&storage, &info)
            .with_context(|| format!("{origin}: tensor `{name}` (storage data/{})", info.key))?;
        out.tensors.insert(name, t);
    }
    Ok(out)
}

fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    origin: &str,
) -> Result<Vec<u8>> {
    let mut f = zip
        .by_name(name)
        .with_context(|| format!("{origin}: missing archive entry `{name}`"))?;
    let mut buf = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut buf)
        .with_context(|| format!("{origin}: cannot read archive entry `{name}`"))?;
    Ok(buf)
}

/// Where a tensor's data lies: storage key, element offset, shape and strides (in elements).
#[derive(Debug)]
struct TensorRef {
    key: String,
    dtype: DType,
    storage_len: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Walk a module: `BUILD(NEWOBJ(class, ()), {attr: value, ...})`.
fn walk(
    obj: Object,
    prefix: &str,
    out: &mut ScriptModule,
    pending: &mut Vec<(String, TensorRef)>,
    origin: &str,
) -> Result<()> {
    let Object::Build { callable, args } = obj else {
        bail!("{origin}: `{prefix}` is not a scripted module object");
    };
    if let Object::Reduce {
        callable: class, ..
    } = *callable
    {
        if let Object::Class {
            module_name,
            class_name,
        } = *class
        {
            out.classes
                .insert(prefix.to_owned(), format!("{module_name}.{class_name}"));
        }
    }
    let Object::Dict(attrs) = *args else {
        bail!("{origin}: module `{prefix}` has no attribute dict");
    };
    for (key, value) in attrs {
        let Object::Unicode(key) = key else { continue };
        let name = join(prefix, &key);
        match value {
            Object::Int(i) => {
                out.ints.insert(name, vec![i as i64]);
            }
            Object::Long(i) => {
                out.ints.insert(name, vec![i]);
            }
            Object::List(items) | Object::Tuple(items)
                if !items.is_empty()
                    && items
                        .iter()
                        .all(|o| matches!(o, Object::Int(_) | Object::Long(_))) =>
            {
                let v = items
                    .into_iter()
                    .map(|o| o.int_or_long().unwrap_or_default())
                    .collect();
                out.ints.insert(name, v);
            }
            v @ Object::Build { .. } => walk(v, &name, out, pending, origin)?,
            v @ Object::Reduce { .. } => {
                if let Some(list) = int_list(&v) {
                    out.ints.insert(name, list);
                    continue;
                }
                if let Some(t) =
                    tensor_ref(v).with_context(|| format!("{origin}: tensor `{name}`"))?
                {
                    pending.push((name, t));
                }
            }
            _ => {} // bools, None, strings: `training`, hooks
        }
    }
    Ok(())
}

/// `torch.jit._pickle.build_intlist([ints])`: how TorchScript pickles a `List[int]` attribute.
fn int_list(obj: &Object) -> Option<Vec<i64>> {
    let Object::Reduce { callable, args } = obj else {
        return None;
    };
    let Object::Class {
        module_name,
        class_name,
    } = &**callable
    else {
        return None;
    };
    if module_name != "torch.jit._pickle" || class_name != "build_intlist" {
        return None;
    }
    let Object::Tuple(args) = &**args else {
        return None;
    };
    let [Object::List(items)] = args.as_slice() else {
        return None;
    };
    items
        .iter()
        .map(|o| match o {
            Object::Int(i) => Some(*i as i64),
            Object::Long(i) => Some(*i),
            _ => None,
        })
        .collect()
}

/// `torch._utils._rebuild_tensor_v2(persistent_id, offset, size, stride, requires_grad, hooks)`,
/// persistent_id = `('storage', torch.FloatStorage, key, location, numel)`.
fn tensor_ref(obj: Object) -> Result<Option<TensorRef>> {
    let Object::Reduce { callable, args } = obj else {
        return Ok(None);
    };
    match *callable {
        Object::Class {
            ref module_name,
            ref class_name,
        } if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {}
        _ => return Ok(None),
    }
    let Object::Tuple(args) = *args else {
        bail!("_rebuild_tensor_v2 arguments are not a tuple")
    };
    ensure!(
        args.len() >= 4,
        "_rebuild_tensor_v2 has {} arguments, expected at least 4",
        args.len()
    );
    let mut args = args.into_iter();
    let (storage, offset, shape, stride) = (
        args.next().unwrap_or(Object::None),
        args.next().unwrap_or(Object::None),
        args.next().unwrap_or(Object::None),
        args.next().unwrap_or(Object::None),
    );
    let Object::PersistentLoad(pid) = storage else {
        bail!("tensor storage is not a persistent id")
    };
    let Object::Tuple(pid) = *pid else {
        bail!("storage persistent id is not a tuple")
    };
    ensure!(
        pid.len() == 5,
        "storage persistent id has {} fields, expected 5",
        pid.len()
    );
    let mut pid = pid.into_iter();
    let _tag = pid.next();
    let dtype = match pid.next() {
        Some(Object::Class { class_name, .. }) => match class_name.as_str() {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            other => bail!("unsupported storage type {other}"),
        },
        o => bail!("storage type is not a class: {o:?}"),
    };
    let key = match pid.next() {
        Some(Object::Unicode(k)) => k,
        o => bail!("storage key is not a string: {o:?}"),
    };
    let _location = pid.next();
    let storage_len = pid
        .next()
        .map(|o| o.int_or_long())
        .transpose()
        .map_err(|o| anyhow::anyhow!("storage size is not an integer: {o:?}"))?
        .unwrap_or(0);
    let ints = |o: Object, what: &str| -> Result<Vec<usize>> {
        let items = match o {
            Object::Tuple(v) | Object::List(v) => v,
            o => bail!("tensor {what} is not a tuple: {o:?}"),
        };
        items
            .into_iter()
            .map(|i| {
                i.int_or_long()
                    .ok()
                    .and_then(|v| usize::try_from(v).ok())
                    .with_context(|| format!("tensor {what} holds a non-integer"))
            })
            .collect()
    };
    let offset = offset
        .int_or_long()
        .ok()
        .and_then(|v| usize::try_from(v).ok())
        .context("tensor storage offset is not a non-negative integer")?;
    Ok(Some(TensorRef {
        key,
        dtype,
        storage_len: usize::try_from(storage_len).context("negative storage size")?,
        offset,
        shape: ints(shape, "size")?,
        stride: ints(stride, "stride")?,
    }))
}

/// Gather a (possibly strided) tensor out of its raw little-endian storage, as contiguous f32.
fn tensor_from_storage(storage: &[u8], t: &TensorRef) -> Result<Tensor> {
    let elem = t.dtype.size_in_bytes();
    let len = storage.len() / elem;
    ensure!(
        storage.len().is_multiple_of(elem) && len >= t.storage_len,
        "storage holds {} bytes, the pickle promises {} elements of {elem} bytes",
        storage.len(),
        t.storage_len
    );
    ensure!(
        t.shape.len() == t.stride.len(),
        "size and stride ranks differ"
    );
    let value = |i: usize| -> f32 {
        let b = &storage[i * elem..(i + 1) * elem];
        match t.dtype {
            DType::F64 => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32,
            _ => f32::from_le_bytes(b.try_into().unwrap_or([0; 4])),
        }
    };
    let numel: usize = t.shape.iter().product();
    if numel > 0 {
        let last = t.offset
            + t.shape
                .iter()
                .zip(&t.stride)
                .map(|(&n, &s)| (n - 1) * s)
                .sum::<usize>();
        ensure!(
            last < len,
            "tensor reaches element {last} of a storage of {len}"
        );
    }
    let mut data = Vec::with_capacity(numel);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        data.push(value(at));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(Tensor::from_vec(data, t.shape.as_slice(), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_storage_is_gathered() {
        // A 2x3 row-major storage read as its 3x2 transpose.
        let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = TensorRef {
            key: "0".into(),
            dtype: DType::F32,
            storage_len: 6,
            offset: 0,
            shape: vec![3, 2],
            stride: vec![1, 3],
        };
        let x = tensor_from_storage(&storage, &t).unwrap();
        assert_eq!(
            x.to_vec2::<f32>().unwrap(),
            vec![vec![0., 3.], vec![1., 4.], vec![2., 5.]]
        );
        let bad = TensorRef {
            shape: vec![4, 2],
            ..t
        };
        assert!(tensor_from_storage(&storage, &bad).is_err());
    }

    #[test]
    fn not_a_zip_is_an_error() {
        let e = read(b"not a zip", "x.pt").unwrap_err().to_string();
        assert!(e.contains("x.pt"), "{e}");
    }
}
