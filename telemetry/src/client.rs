//! The client of an agent endpoint: its instances' log lines and its
//! stats, asked with the cluster's agent secret.

use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};

use crate::{Event, Query, Stats};

/// Why an agent endpoint gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot reach {endpoint}: {source}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{endpoint} refused: {status} {message}")]
    Refused {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("{endpoint} sent what is not a log event: {message}")]
    Garbled { endpoint: String, message: String },
}

/// Reads agent endpoints; cheap to clone.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    secret: String,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient").finish_non_exhaustive()
    }
}

/// The longest line an agent sends, with room for its JSON.
const MAX_EVENT: usize = 1 << 20;

impl AgentClient {
    pub fn new(secret: &str) -> AgentClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        AgentClient {
            http,
            secret: secret.to_string(),
        }
    }

    /// The machine's stats, within `timeout`.
    pub async fn stats(&self, endpoint: &str, timeout: Duration) -> Result<Stats, TelemetryError> {
        let url = format!("{}/v1/stats", endpoint.trim_end_matches('/'));
        let response = self.get(endpoint, &url, Some(timeout)).await?;
        response
            .json()
            .await
            .map_err(|source| TelemetryError::Unreachable {
                endpoint: endpoint.to_string(),
                source,
            })
    }

    /// The lines of `app` that `query` selects, as the machine sends them:
    /// the kept ones, then (with `query.follow`) each new one until the
    /// stream is dropped or breaks.
    pub async fn logs(
        &self,
        endpoint: &str,
        app: &str,
        query: &Query,
    ) -> Result<impl Stream<Item = Result<Event, TelemetryError>> + Send + 'static, TelemetryError>
    {
        let base = endpoint.trim_end_matches('/');
        let mut url = reqwest::Url::parse(&format!("{base}/v1/logs/")).map_err(|error| {
            TelemetryError::Garbled {
                endpoint: endpoint.to_string(),
                message: format!("not a URL: {error}"),
            }
        })?;
        url.path_segments_mut()
            .map_err(|()| TelemetryError::Garbled {
                endpoint: endpoint.to_string(),
                message: "not a base URL".into(),
            })?
            .pop_if_empty()
            .push(app);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("lines", &query.lines.to_string());
            if let Some(since) = query.since {
                pairs.append_pair("since", &since.to_string());
            }
            if let Some(after) = query.after {
                pairs.append_pair("after", &after.to_string());
            }
            if let Some(process) = &query.process {
                pairs.append_pair("process", process);
            }
            if let Some(instance) = &query.instance {
                pairs.append_pair("instance", instance);
            }
            pairs.append_pair("follow", if query.follow { "true" } else { "false" });
        }
        let timeout = (!query.follow).then_some(Duration::from_secs(30));
        let response = self.get(endpoint, url.as_str(), timeout).await?;
        let endpoint = endpoint.to_string();
        let bytes = response.bytes_stream().map_err({
            let endpoint = endpoint.clone();
            move |source| TelemetryError::Unreachable {
                endpoint: endpoint.clone(),
                source,
            }
        });
        Ok(ndjson(bytes, endpoint))
    }

    /// Attaches to the one-off `unit` that the agent at `endpoint` runs:
    /// the agent starts its container once attached (its TTY resized at
    /// once to `size`, columns and rows, if given), and the connection
    /// carries [`crate::attach::Frame`]s both ways until it exits.
    pub async fn attach(
        &self,
        endpoint: &str,
        unit: &str,
        size: Option<(u16, u16)>,
    ) -> Result<
        tokio_util::codec::Framed<reqwest::Upgraded, crate::attach::FrameCodec>,
        TelemetryError,
    > {
        let base = endpoint.trim_end_matches('/');
        let mut url = format!("{base}/v1/runs/{unit}/attach");
        if let Some((cols, rows)) = size {
            url.push_str(&format!("?cols={cols}&rows={rows}"));
        }
        let unreachable = |source| TelemetryError::Unreachable {
            endpoint: endpoint.to_string(),
            source,
        };
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.secret)
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, crate::attach::ATTACH_PROTOCOL)
            .send()
            .await
            .map_err(unreachable)?;
        if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status().as_u16();
            let message = response.text().await.unwrap_or_default();
            return Err(TelemetryError::Refused {
                endpoint: endpoint.to_string(),
                status,
                message: message.trim().to_string(),
            });
        }
        let upgraded = response.upgrade().await.map_err(unreachable)?;
        Ok(tokio_util::codec::Framed::new(
            upgraded,
            crate::attach::FrameCodec,
        ))
    }

    async fn get(
        &self,
        endpoint: &str,
        url: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, TelemetryError> {
        let mut request = self.http.get(url).bearer_auth(&self.secret);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|source| TelemetryError::Unreachable {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(TelemetryError::Refused {
                endpoint: endpoint.to_string(),
                status: status.as_u16(),
                message: message.trim().chars().take(300).collect(),
            });
        }
        Ok(response)
    }
}

/// One event per JSON line of `bytes`.
fn ndjson(
    bytes: impl Stream<Item = Result<bytes::Bytes, TelemetryError>> + Send + 'static,
    endpoint: String,
) -> impl Stream<Item = Result<Event, TelemetryError>> + Send + 'static {
    // What was received, and where in it the next line starts: lines are
    // parsed where they lie, and the buffer is compacted once per chunk.
    let state = (Box::pin(bytes), Vec::<u8>::new(), 0usize, endpoint, false);
    futures::stream::unfold(
        state,
        |(mut bytes, mut pending, mut start, endpoint, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                    let line = &pending[start..start + end];
                    start += end + 1;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let event = serde_json::from_slice::<Event>(line).map_err(|error| {
                        TelemetryError::Garbled {
                            endpoint: endpoint.clone(),
                            message: error.to_string(),
                        }
                    });
                    return Some((event, (bytes, pending, start, endpoint, false)));
                }
                if pending.len() - start > MAX_EVENT {
                    let error = TelemetryError::Garbled {
                        endpoint: endpoint.clone(),
                        message: format!("a line longer than {MAX_EVENT} bytes"),
                    };
                    return Some((Err(error), (bytes, pending, start, endpoint, true)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => {
                        pending.drain(..start);
                        start = 0;
                        pending.extend_from_slice(&chunk);
                    }
                    Some(Err(error)) => {
                        return Some((Err(error), (bytes, pending, start, endpoint, true)))
                    }
                    None => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Line, Source};

    #[tokio::test]
    async fn events_are_read_a_json_line_each_across_chunk_boundaries() {
        let line = Event::Line(Line {
            t: 5,
            instance: "web.1".into(),
            release: 2,
            source: Source::Out,
            container: String::new(),
            message: "hello".into(),
        });
        let mut text = serde_json::to_vec(&line).unwrap();
        text.push(b'\n');
        text.extend_from_slice(b"{\"notice\":\"skipped 3 lines\"}\n");
        let chunks: Vec<Result<bytes::Bytes, TelemetryError>> = text
            .chunks(7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let events: Vec<Event> = ndjson(futures::stream::iter(chunks), "x".into())
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(events, vec![line, Event::Notice("skipped 3 lines".into())]);
    }
}
