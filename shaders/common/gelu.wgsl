// GELU, erf form (as BERT uses): gelu(x) = 0.5 · x · (1 + erf(x / √2)).
// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), the same formula as the CPU twin.

fn erf_approx(x: f32) -> f32 {
    let s = sign(x);
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-a * a));
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}
