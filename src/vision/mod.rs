//! Page images → the vision tower's input: decoding (the `image` crate),
//! Qwen2-VL's `smart_resize`, the antialiased bicubic resize of the reference
//! processor (bit-exact on uint8), CLIP normalisation and the patch layout.

pub mod preprocess;

pub use preprocess::{
    decode_rgb, load_rgb, pixel_patches, resize_bicubic_aa, smart_resize, ImageProcessorConfig, Patches,
    RgbImage,
};
