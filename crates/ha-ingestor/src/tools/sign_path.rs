//! `sign-path`: a URL that a plain GET can read without a header, until it expires.

use std::time::Duration;

use super::{ConnectionOptions, ToolError, connect};

/// Parses `30s`, `5m`, `1h 30m` (humantime); at least one second.
pub fn parse_expiry(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration like 30s, 5m or 1h: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("'{text}': the expiry must be at least 1s"));
    }
    Ok(d)
}

/// Runs `sign-path`: prints the full signed URL on stdout.
pub async fn sign_path(
    conn: &ConnectionOptions,
    path: &str,
    expires: Duration,
) -> Result<(), ToolError> {
    if !path.starts_with('/') {
        return Err(ToolError::usage(format!(
            "'{path}' is not a path: give it from the root, e.g. /api/camera_proxy/camera.door"
        )));
    }
    let (_, inst) = conn.instance()?;
    let ws = connect(&inst).await?;
    let signed = ws.sign_path(path, expires).await;
    ws.close();
    let url = signed.map_err(|e| ToolError::client("auth/sign_path", &e))?;
    crate::outln!("{url}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries() {
        assert_eq!(parse_expiry("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_expiry("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_expiry("10ms").is_err());
        assert!(parse_expiry("soon").is_err());
    }
}
