//! Kubernetes resource quantities: written from the local limits, and read
//! back (any accepted spelling) so `k8s check` compares values, not text.

/// A byte count as a quantity: binary units when exact (`512Mi`), the
/// plain count otherwise. Either way the same bytes as the local limit.
pub fn bytes(n: u64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if n != 0 && n % (1u64 << shift) == 0 {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

/// CPU cores as a quantity in millicores (`1`, `500m`); `None` below 1m,
/// which Kubernetes cannot express.
pub fn cpus(cores: f64) -> Option<String> {
    let milli = (cores * 1000.0).round();
    if !(1.0..=1e12).contains(&milli) {
        return None;
    }
    let milli = milli as u64;
    Some(if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    })
}

/// The value of a quantity (a string, or a JSON number as YAML gives it)
/// in thousandths of a unit, exactly; `None` when it is not a quantity or
/// is not a whole number of thousandths.
pub fn milli_units(value: &serde_json::Value) -> Option<i128> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    parse_milli(&text)
}

fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    // (numerator, denominator) of the suffix's multiplier, times 1000.
    let (mul, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            (1, exp.parse::<i32>().ok().filter(|e| e.abs() <= 18)?)
        }
    };
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() + frac.len() > 30
    {
        return None;
    }
    // digits × 10^(exp10 + 3 - frac.len()) × mul, exact or refused.
    let mantissa: i128 = format!("{whole}{frac}").parse().ok()?;
    let exp = exp10 + 3 - i32::try_from(frac.len()).ok()?;
    let scaled = if exp >= 0 {
        mantissa.checked_mul(10i128.checked_pow(exp as u32)?)?
    } else {
        let div = 10i128.checked_pow(exp.unsigned_abs())?;
        let product = mantissa.checked_mul(mul)?;
        if product % div != 0 {
            return None;
        }
        let v = product / div;
        return Some(if negative { -v } else { v });
    };
    let v = scaled.checked_mul(mul)?;
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_use_binary_units_only_when_exact() {
        assert_eq!(bytes(512 << 20), "512Mi");
        assert_eq!(bytes(2 << 30), "2Gi");
        assert_eq!(bytes(1 << 20), "1Mi");
        assert_eq!(bytes(1000), "1000");
        assert_eq!(bytes(3 << 10), "3Ki");
    }

    #[test]
    fn cpus_are_millicores() {
        assert_eq!(cpus(1.0).as_deref(), Some("1"));
        assert_eq!(cpus(0.5).as_deref(), Some("500m"));
        assert_eq!(cpus(2.25).as_deref(), Some("2250m"));
        assert_eq!(cpus(0.0001), None);
    }

    #[test]
    fn spellings_of_one_value_compare_equal() {
        let v = |x: serde_json::Value| milli_units(&x);
        assert_eq!(v(json!("512Mi")), v(json!("536870912")));
        assert_eq!(v(json!("512Mi")), v(json!(536870912)));
        assert_eq!(v(json!("1")), v(json!("1000m")));
        assert_eq!(v(json!("0.5")), v(json!("500m")));
        assert_eq!(v(json!(0.5)), v(json!("500m")));
        assert_eq!(v(json!("1k")), v(json!("1e3")));
        assert_eq!(v(json!("1.5Gi")), v(json!("1536Mi")));
        assert_ne!(v(json!("512Mi")), v(json!("512M")));
        for bad in [
            json!("lots"),
            json!(""),
            json!("1Zi"),
            json!("0.0001m"),
            json!(true),
        ] {
            assert_eq!(milli_units(&bad), None, "{bad}");
        }
    }
}
