//! The upload listener's requests: XML-RPC POSTs with a Content-Length
//! body, framed and bounded here, answered by [`Service::answer`] on
//! tokio's blocking pool (it parses and fsyncs).
//!
//! Memory: a request's body is read only once it has room in the byte
//! budget (`--body-memory`), which it keeps until it is answered; requests
//! without room wait, within their deadline. So bodies in flight, and the
//! parsing that follows them, are bounded whatever the number of
//! connections.

use crate::metrics::{self, COUNTERS};
use crate::rpc::Service;
use crate::server::{with_server, Body, Conn, Site};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::{Method, Request, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Paths the receiver answers: Cobbler's Apache path, and what Python's
/// SimpleXMLRPCServer (cobblerd) answers behind it.
pub const RPC_PATHS: [&str; 3] = ["/cobbler_api", "/RPC2", "/"];

/// The budget is counted in units of this many bytes (a semaphore's
/// permits are counted in u32).
const UNIT: usize = 1024;

pub struct Uploads {
    service: Arc<Service>,
    /// Time from a request's head to the end of its body.
    timeout: Duration,
    max_body: usize,
    /// Room for bodies in memory, in units of [`UNIT`] bytes.
    budget: Arc<Semaphore>,
}

/// A request refused with an HTTP status.
struct Refusal {
    status: StatusCode,
    why: String,
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// Why a request got no XML-RPC answer.
enum NotAnswered {
    /// Refused with a status.
    Refused(Refusal),
    /// The client went away mid-body: nobody to answer.
    Gone(hyper::Error),
}

impl From<Refusal> for NotAnswered {
    fn from(r: Refusal) -> NotAnswered {
        NotAnswered::Refused(r)
    }
}

impl Uploads {
    pub fn new(
        service: Arc<Service>,
        timeout: Duration,
        max_body: usize,
        budget: usize,
    ) -> Uploads {
        let units = budget.max(max_body).div_ceil(UNIT);
        Uploads {
            service,
            timeout,
            max_body,
            budget: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Checks the head of `req`: a POST to an XML-RPC path, framed by one
    /// Content-Length within the cap. Returns that length.
    fn framing(&self, req: &Request<Incoming>) -> Result<usize, Refusal> {
        let target = req.uri().to_string();
        if req.method() != Method::POST {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} {target:?}: XML-RPC needs POST", req.method()),
            ));
        }
        if !RPC_PATHS.contains(&target.as_str()) {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("{target:?} is not an XML-RPC endpoint"),
            ));
        }
        if req.headers().contains_key(TRANSFER_ENCODING) {
            // Request smuggling starts with bodies framed two ways; XML-RPC
            // clients send Content-Length.
            return Err(refuse(
                StatusCode::NOT_IMPLEMENTED,
                "Transfer-Encoding is not supported",
            ));
        }
        // hyper has refused (400) a Content-Length that is not a number,
        // or two that differ.
        let Some(length) = req.headers().get(CONTENT_LENGTH) else {
            return Err(refuse(
                StatusCode::LENGTH_REQUIRED,
                "a Content-Length is required",
            ));
        };
        let length: usize = length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "Content-Length is not a number"))?;
        if length > self.max_body {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body of {length} bytes is over this receiver's limit of {}",
                    self.max_body
                ),
            ));
        }
        Ok(length)
    }

    /// Waits for room for `length` bytes in the budget, then reads them.
    async fn body(
        &self,
        req: Request<Incoming>,
        length: usize,
    ) -> Result<(Vec<u8>, OwnedSemaphorePermit), NotAnswered> {
        let units = u32::try_from(length.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        let room = Arc::clone(&self.budget)
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        let mut body = Vec::with_capacity(length);
        let mut incoming = req.into_body();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(NotAnswered::Gone)?;
            if let Ok(data) = frame.into_data() {
                body.extend_from_slice(&data);
            }
        }
        Ok((body, room))
    }

    /// The client of a request: the peer, or the address a trusted proxy
    /// forwards for (the last entry of the last X-Forwarded-For header:
    /// the one the nearest proxy added; those before it are the client's
    /// to invent).
    fn client(conn: &Conn, req: &Request<Incoming>) -> IpAddr {
        if !conn.trusted_proxy {
            return conn.peer;
        }
        req.headers()
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or(conn.peer)
    }

    async fn answer(&self, conn: &Conn, req: Request<Incoming>) -> Result<Vec<u8>, NotAnswered> {
        let length = self.framing(&req)?;
        let client = Self::client(conn, &req);
        let (body, room) = tokio::time::timeout(self.timeout, self.body(req, length))
            .await
            .map_err(|_| refuse(StatusCode::REQUEST_TIMEOUT, "request not received in time"))??;
        let service = Arc::clone(&self.service);
        let answered = tokio::task::spawn_blocking(move || {
            let answer = service.answer(client, &body);
            drop(room);
            answer
        })
        .await;
        answered.map_err(|e| {
            NotAnswered::Refused(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the call failed: {e}"),
            ))
        })
    }
}

impl Site for Uploads {
    async fn handle(self: Arc<Self>, conn: Conn, req: Request<Incoming>) -> Response<Body> {
        match self.answer(&conn, req).await {
            Ok(answer) => {
                let mut resp = Response::new(Body::whole(answer));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
                with_server(resp)
            }
            Err(NotAnswered::Refused(Refusal { status, why })) => {
                COUNTERS.refused(metrics::Cause::Http);
                self.service
                    .sessions
                    .noise(conn.peer, &format!("HTTP {}: {why}", status.as_u16()));
                let mut resp = Response::new(Body::whole(format!("{why}\n")));
                *resp.status_mut() = status;
                let h = resp.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                // A refused request may have left its body unread: the
                // connection cannot carry another.
                h.insert(CONNECTION, HeaderValue::from_static("close"));
                with_server(resp)
            }
            Err(NotAnswered::Gone(e)) => {
                self.service
                    .sessions
                    .noise(conn.peer, &format!("connection lost: {e}"));
                Response::new(Body::Whole(None))
            }
        }
    }

    fn noise(&self, peer: IpAddr, what: &str) {
        self.service.sessions.noise(peer, what);
    }

    fn refused(&self, peer: IpAddr, what: &str) {
        COUNTERS.refused(metrics::Cause::Http);
        self.noise(peer, what);
    }
}
