//! Tier 0, no GPU needed: every shader parses and validates with naga, and every
//! kernel's `Params` has the size naga computes for the WGSL struct.

use colwgpu::gpu::shader;

fn module(name: &str) -> naga::Module {
    let src = shader::source(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)))
}

#[test]
fn every_shader_parses_and_validates() {
    let mut n = 0;
    for name in shader::kernel_files() {
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

#[test]
fn every_kernel_spec_names_an_entry_point_with_matching_bindings() {
    for spec in colwgpu::kernels::ALL {
        let m = module(spec.shader);
        assert!(
            m.entry_points.iter().any(|e| e.name == spec.entry),
            "{}: no entry point '{}'",
            spec.shader,
            spec.entry
        );
        let mut bindings: Vec<u32> = m
            .global_variables
            .iter()
            .filter_map(|(_, g)| g.binding.as_ref().map(|b| b.binding))
            .collect();
        bindings.sort();
        bindings.dedup();
        assert_eq!(
            bindings.len(),
            spec.bindings.len(),
            "{}: the WGSL declares bindings {bindings:?}, the Rust spec {} bindings",
            spec.shader,
            spec.bindings.len()
        );
    }
}

#[test]
fn params_structs_match_wgsl_layout() {
    for (name, rust_size) in colwgpu::kernels::PARAMS_SIZES {
        let m = module(name);
        let wgsl_size = m
            .types
            .iter()
            .find_map(|(_, t)| match (&t.name, &t.inner) {
                (Some(n), naga::TypeInner::Struct { span, .. }) if n == "Params" => {
                    Some(*span as usize)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: no struct Params"));
        assert_eq!(
            wgsl_size, *rust_size,
            "{name}: WGSL Params is {wgsl_size} bytes, Rust {rust_size}"
        );
    }
}

#[test]
fn include_expands_once_and_unknown_files_error() {
    let src = shader::source("embed.wgsl").expect("embed.wgsl");
    assert_eq!(src.matches("fn workgroup_sum").count(), 1);
    assert!(!src.contains("//!include"));
    assert!(shader::source("no_such.wgsl").is_err());
}
