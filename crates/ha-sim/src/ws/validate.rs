//! Voluptuous-style message validation with HA's humanized error texts
//! (`required key not provided @ data['service']. Got None`, sorted, joined by newlines).

use serde_json::Value;

/// Expected type of a field.
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    /// Any value.
    Any,
    /// A string.
    Str,
    /// An integer (not a bool).
    Int,
    /// A non-negative integer (`cv.positive_int`, coercing numeric strings).
    PosInt,
    /// A bool.
    Bool,
    /// An object.
    Dict,
    /// A list of strings.
    StrList,
    /// A comma-separated string or a list of strings (`cv.entity_ids`).
    EntityIds,
    /// Exactly this string.
    Const(&'static str),
}

/// A field: name, required, type.
pub type Field = (&'static str, bool, Ty);

/// Python's `repr` of a JSON value.
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                format!("{f:?}")
            } else {
                n.to_string()
            }
        }
        Value::String(s) => py_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn py_str(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

fn got(v: &Value) -> String {
    let r = py_repr(v);
    if r.len() > 500 {
        let mut cut = 497;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &r[..cut])
    } else {
        r
    }
}

fn type_ok(ty: Ty, v: &Value) -> Option<&'static str> {
    let ok = match ty {
        Ty::Any => true,
        Ty::Str => v.is_string(),
        Ty::Int => v.is_i64() || v.is_u64(),
        Ty::PosInt => {
            v.as_u64().is_some() || v.as_str().is_some_and(|s| s.trim().parse::<u64>().is_ok())
        }
        Ty::Bool => v.is_boolean(),
        Ty::Dict => v.is_object(),
        Ty::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Ty::EntityIds => {
            v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        }
        Ty::Const(c) => v.as_str() == Some(c),
    };
    if ok {
        return None;
    }
    Some(match ty {
        Ty::Str => "expected str for dictionary value",
        Ty::Int | Ty::PosInt => "expected int for dictionary value",
        Ty::Bool => "expected bool for dictionary value",
        Ty::Dict => "expected dict for dictionary value",
        Ty::StrList => "expected list for dictionary value",
        Ty::EntityIds => "Entity IDs should be a comma separated string or a list",
        _ => "not a valid value for dictionary value",
    })
}

/// Validates an object against `fields` (extra keys not allowed). `Err` carries the humanized text.
pub fn validate(msg: &Value, fields: &[Field]) -> Result<(), String> {
    let Some(obj) = msg.as_object() else {
        return Err(format!("expected a dictionary. Got {}", got(msg)));
    };
    let mut errors = Vec::new();
    for (k, v) in obj {
        match fields.iter().find(|(name, _, _)| name == k) {
            None => errors.push(format!(
                "extra keys not allowed @ data['{k}']. Got {}",
                got(v)
            )),
            Some((_, _, ty)) => {
                if let Some(e) = type_ok(*ty, v) {
                    errors.push(format!("{e} @ data['{k}']. Got {}", got(v)));
                }
            }
        }
    }
    for (name, required, _) in fields {
        if *required && !obj.contains_key(*name) {
            errors.push(format!(
                "required key not provided @ data['{name}']. Got None"
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort();
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_message_errors_match_ha() {
        let fields = [
            ("type", true, Ty::Const("auth")),
            ("access_token", false, Ty::Str),
            ("api_password", false, Ty::Str),
        ];
        assert_eq!(
            validate(&json!({"id": 1, "type": "get_states"}), &fields).unwrap_err(),
            "extra keys not allowed @ data['id']. Got 1\nnot a valid value for dictionary value @ data['type']. Got 'get_states'"
        );
        assert_eq!(
            py_repr(&json!({"a": [1, 2.5, null, true, "it's"]})),
            "{'a': [1, 2.5, None, True, \"it's\"]}"
        );
    }
}
