//! Tier 0, no GPU needed: every shader parses and validates with naga; every
//! kernel's bindings (names, binding numbers, access modes) and every `Params`
//! field (name, offset, scalar type) match naga's reflection of the WGSL.

use colwgpu::gpu::{shader, Binding, KernelSpec};

fn module(name: &str) -> naga::Module {
    let src = shader::source(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)))
}

#[test]
fn every_shader_parses_and_validates() {
    let mut n = 0;
    let variants = shader::variants();
    assert!(
        variants.iter().any(|v| v == "matmul.wgsl#f16"),
        "variants found: {variants:?}"
    );
    for name in shader::kernel_files().map(String::from).chain(variants) {
        let name = name.as_str();
        let m = module(name);
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&m)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        n += 1;
    }
    assert!(n >= 5, "expected at least 5 kernel files, found {n}");
}

/// What naga says one global is: its binding number, name, kind.
#[derive(Debug, Clone, PartialEq)]
struct Global {
    binding: u32,
    name: String,
    kind: Binding,
}

/// The `@group(0)` globals of `module`: those `entry` uses, and all declared
/// (by binding), each with its kind (read / read_write storage, uniform).
fn reflect(name: &str, module: &naga::Module, entry: &str) -> (Vec<Global>, Vec<Global>) {
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(module)
    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let ep = module
        .entry_points
        .iter()
        .position(|e| e.name == entry)
        .unwrap_or_else(|| panic!("{name}: no entry point '{entry}'"));
    let ep_info = info.get_entry_point(ep);
    let (mut used, mut all) = (Vec::new(), Vec::new());
    for (h, g) in module.global_variables.iter() {
        let Some(rb) = &g.binding else { continue };
        assert_eq!(rb.group, 0, "{name}: {:?} is not in group 0", g.name);
        let kind = match g.space {
            naga::AddressSpace::Uniform => Binding::Uniform,
            naga::AddressSpace::Storage { access } => {
                if access.contains(naga::StorageAccess::STORE) {
                    Binding::ReadWrite
                } else {
                    Binding::Read
                }
            }
            other => panic!("{name}: {:?} in unexpected space {other:?}", g.name),
        };
        let global = Global {
            binding: rb.binding,
            name: g.name.clone().unwrap_or_default(),
            kind,
        };
        if !ep_info[h].is_empty() {
            used.push(global.clone());
        }
        all.push(global);
    }
    used.sort_by_key(|g| g.binding);
    (used, all)
}

/// Checks one kernel's Rust side against naga's reflection of its shader:
/// each Rust binding (the `Buffers` fields in order, the uniform where the
/// spec puts it) names a WGSL global with that binding number and access
/// mode, and every global the entry point uses is bound with the right kind.
fn check_bindings(spec: &KernelSpec, names: &[&str], module: &naga::Module) -> Result<(), String> {
    let (used, all) = reflect(spec.shader, module, spec.entry);
    let storage: Vec<usize> = (0..spec.bindings.len())
        .filter(|&i| spec.bindings[i] != Binding::Uniform)
        .collect();
    let at = format!("{}:{}", spec.shader, spec.entry);
    if storage.len() != names.len() {
        return Err(format!(
            "{at}: the spec has {} storage bindings, the Buffers struct {} fields {names:?}",
            storage.len(),
            names.len()
        ));
    }
    for (slot, name) in storage.iter().zip(names) {
        let g = all
            .iter()
            .find(|g| g.name == *name)
            .ok_or_else(|| format!("{at}: no WGSL global named '{name}'"))?;
        if g.binding != *slot as u32 {
            return Err(format!(
                "{at}: '{name}' is bound at {slot} by Rust but declared @binding({}) in WGSL",
                g.binding
            ));
        }
        if g.kind != spec.bindings[*slot] {
            return Err(format!(
                "{at}: '{name}' (binding {slot}) is {:?} in WGSL but {:?} in the spec",
                g.kind, spec.bindings[*slot]
            ));
        }
    }
    for g in &used {
        match spec.bindings.get(g.binding as usize) {
            Some(k) if *k == g.kind => {}
            other => {
                return Err(format!(
                    "{at}: the entry uses '{}' @binding({}) as {:?}; the spec has {other:?}",
                    g.name, g.binding, g.kind
                ))
            }
        }
        if g.kind == Binding::Uniform && g.name != "params" {
            return Err(format!("{at}: uniform '{}' is not `params`", g.name));
        }
    }
    if !used.iter().any(|g| g.kind == Binding::Uniform) {
        return Err(format!("{at}: the entry does not read `params`"));
    }
    Ok(())
}

#[test]
fn every_kernel_binds_named_buffers_with_the_wgsl_access_modes() {
    for spec in colwgpu::kernels::ALL {
        let entry = colwgpu::kernels::BINDING_NAMES
            .iter()
            .find(|b| b.spec.shader == spec.shader && b.spec.entry == spec.entry)
            .unwrap_or_else(|| panic!("{}:{} has no BINDING_NAMES entry", spec.shader, spec.entry));
        assert_eq!(entry.spec.bindings, spec.bindings);
        let m = module(spec.shader);
        check_bindings(spec, entry.names, &m).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The check catches what it is for: two buffers of the same kind swapped, a
/// read-only binding declared read_write, the uniform in the wrong slot.
#[test]
fn binding_check_catches_swaps_and_wrong_access_modes() {
    let spec = colwgpu::kernels::layernorm::SPEC;
    let names = colwgpu::kernels::layernorm::Buffers::NAMES;
    let m = module(spec.shader);
    check_bindings(&spec, names, &m).unwrap();
    let mut swapped = names.to_vec();
    swapped.swap(2, 3); // gamma <-> beta: same kind, so only the names can tell
    let e = check_bindings(&spec, &swapped, &m).unwrap_err();
    assert!(e.contains("'beta' is bound at 2"), "{e}");
    let src = shader::source(spec.shader).unwrap();
    let rw = src.replace("var<storage, read> gamma", "var<storage, read_write> gamma");
    assert_ne!(rw, src);
    let m = naga::front::wgsl::parse_str(&rw).unwrap();
    let e = check_bindings(&spec, names, &m).unwrap_err();
    assert!(
        e.contains("'gamma' (binding 2) is ReadWrite in WGSL"),
        "{e}"
    );
    let mut bindings = spec.bindings.to_vec();
    bindings.swap(4, 5); // params before out
    let leaked: &'static [Binding] = Box::leak(bindings.into_boxed_slice());
    let bad = KernelSpec {
        bindings: leaked,
        ..spec
    };
    assert!(check_bindings(&bad, names, &module(spec.shader)).is_err());
}

/// `(name, offset, scalar type)` of each member of the WGSL struct `Params`.
type Fields = Vec<(String, usize, String)>;

fn wgsl_params(module: &naga::Module) -> Option<(usize, Fields)> {
    module
        .types
        .iter()
        .find_map(|(_, t)| match (&t.name, &t.inner) {
            (Some(n), naga::TypeInner::Struct { members, span }) if n == "Params" => {
                let fields = members
                    .iter()
                    .map(|m| {
                        let ty = match &module.types[m.ty].inner {
                            naga::TypeInner::Scalar(s) => match (s.kind, s.width) {
                                (naga::ScalarKind::Uint, 4) => "u32",
                                (naga::ScalarKind::Sint, 4) => "i32",
                                (naga::ScalarKind::Float, 4) => "f32",
                                _ => "other scalar",
                            },
                            _ => "not a scalar",
                        };
                        (
                            m.name.clone().unwrap_or_default(),
                            m.offset as usize,
                            ty.to_string(),
                        )
                    })
                    .collect();
                Some((*span as usize, fields))
            }
            _ => None,
        })
}

fn check_params(
    layout: &colwgpu::kernels::ParamsLayout,
    module: &naga::Module,
) -> Result<(), String> {
    let name = layout.shader;
    let (size, wgsl) = wgsl_params(module).ok_or_else(|| format!("{name}: no struct Params"))?;
    if size != layout.size {
        return Err(format!(
            "{name}: WGSL Params is {size} bytes, Rust {}",
            layout.size
        ));
    }
    let rust: Fields = layout
        .fields
        .iter()
        .map(|(n, o, t)| (n.to_string(), *o, t.to_string()))
        .collect();
    if rust != wgsl {
        return Err(format!(
            "{name}: Params fields differ (name, offset, type)\n  rust: {rust:?}\n  wgsl: {wgsl:?}"
        ));
    }
    Ok(())
}

#[test]
fn params_structs_match_wgsl_layout_field_by_field() {
    let layouts = colwgpu::kernels::params_layouts();
    for spec in colwgpu::kernels::ALL {
        assert!(
            layouts.iter().any(|l| l.shader == spec.shader),
            "{}: no params layout",
            spec.shader
        );
    }
    for layout in &layouts {
        check_params(layout, &module(layout.shader)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The check catches two same-sized fields in another order and a field whose
/// scalar type differs.
#[test]
fn params_check_catches_reordered_fields_and_wrong_types() {
    let layouts = colwgpu::kernels::params_layouts();
    let plaid = layouts.iter().find(|l| l.shader == "plaid.wgsl").unwrap();
    let m = module("plaid.wgsl");
    check_params(plaid, &m).unwrap();
    let mut reordered = plaid.clone();
    let (a, b) = (reordered.fields[0].0, reordered.fields[1].0);
    reordered.fields[0].0 = b;
    reordered.fields[1].0 = a;
    assert!(check_params(&reordered, &m).is_err());
    let mut retyped = plaid.clone();
    let threshold = retyped
        .fields
        .iter_mut()
        .find(|f| f.0 == "threshold")
        .unwrap();
    assert_eq!(threshold.2, "f32");
    threshold.2 = "u32";
    let e = check_params(&retyped, &m).unwrap_err();
    assert!(e.contains("\"threshold\", 20, \"u32\""), "{e}");
}

#[test]
fn include_expands_once_and_unknown_files_error() {
    let src = shader::source("embed.wgsl").expect("embed.wgsl");
    assert_eq!(src.matches("fn workgroup_sum").count(), 1);
    assert!(!src.contains("//!include"));
    assert!(shader::source("no_such.wgsl").is_err());
}

/// `matmul.wgsl#f16` is `matmul.wgsl` with its marked lines swapped: f16
/// enabled and the weight type f16, every other line the same; the plain
/// source has no f16 at all, and an undeclared variant is an error.
#[test]
fn variants_swap_only_the_marked_lines() {
    let plain = shader::source("matmul.wgsl").unwrap();
    let f16 = shader::source("matmul.wgsl#f16").unwrap();
    let code = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.split("//").next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let (a, b) = (code(&plain), code(&f16));
    assert!(!a.iter().any(|l| l.contains("f16")), "{a:?}");
    assert_eq!(b[0], "enable f16;");
    assert_eq!(a.len() + 1, b.len());
    let differ: Vec<(&String, &String)> = a.iter().zip(&b[1..]).filter(|(x, y)| x != y).collect();
    assert_eq!(
        differ,
        vec![(
            &"alias Weight = f32;".to_string(),
            &"alias Weight = f16;".to_string()
        )]
    );
    // Without SHADER_FLOAT16 the variant does not validate: the device must ask for it.
    let m = module("matmul.wgsl#f16");
    assert!(naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty()
    )
    .validate(&m)
    .is_err());
    let e = shader::source("matmul.wgsl#bf16").unwrap_err().to_string();
    assert!(e.contains("no variant 'bf16'"), "{e}");
}
