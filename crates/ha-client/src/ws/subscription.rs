//! A subscription's stream: the connection task hands over each frame's events for it as one
//! [`Delivery`] (one channel send and one wake-up per frame, not per event); the stream hands
//! them out one by one.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Event;
use super::connection::Control;

/// A frame and where its events for one subscription are in it.
pub(crate) struct Delivery {
    pub(crate) frame: Utf8Bytes,
    pub(crate) spans: Vec<Range<usize>>,
    /// The bytes of those events, as counted in [`Queued::bytes`].
    pub(crate) bytes: usize,
}

/// What a subscription holds, not yet taken by its stream: the connection task keeps it within
/// `event_buffer` events and `event_buffer_bytes` bytes and drops (and reports) what does not fit.
#[derive(Default)]
pub(crate) struct Queued {
    pub(crate) events: AtomicUsize,
    pub(crate) bytes: AtomicUsize,
}

/// A live subscription: a stream of [`Event`]s that survives reconnects. Dropping it unsubscribes.
pub struct Subscription {
    key: u64,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    /// Events sent and not yet taken out of the channel (see [`Queued`]).
    queued: Arc<Queued>,
    /// The delivery being handed out, and its next event.
    current: Option<(Delivery, usize)>,
    control: mpsc::UnboundedSender<Control>,
}

impl Subscription {
    pub(crate) fn new(
        key: u64,
        deliveries: mpsc::UnboundedReceiver<Delivery>,
        queued: Arc<Queued>,
        control: mpsc::UnboundedSender<Control>,
    ) -> Self {
        Subscription {
            key,
            deliveries,
            queued,
            current: None,
            control,
        }
    }

    /// The stable key, as used in [`ConnectionEvent`](super::ConnectionEvent)s.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Waits for at least one event, then takes up to `limit` waiting events into `buf`.
    /// Returns 0 when the subscription has ended.
    pub async fn recv_many(&mut self, buf: &mut Vec<Event>, limit: usize) -> usize {
        let limit = limit.max(1);
        let mut n = 0;
        if self.current_is_empty() {
            match self.deliveries.recv().await {
                Some(d) => self.take(d),
                None => return 0,
            }
        }
        while n < limit {
            if let Some(e) = self.next_buffered() {
                buf.push(e);
                n += 1;
                continue;
            }
            match self.deliveries.try_recv() {
                Ok(d) => self.take(d),
                Err(_) => break,
            }
        }
        n
    }

    fn current_is_empty(&self) -> bool {
        self.current
            .as_ref()
            .is_none_or(|(d, next)| *next >= d.spans.len())
    }

    fn take(&mut self, d: Delivery) {
        self.queued
            .events
            .fetch_sub(d.spans.len(), Ordering::AcqRel);
        self.queued.bytes.fetch_sub(d.bytes, Ordering::AcqRel);
        self.current = Some((d, 0));
    }

    fn next_buffered(&mut self) -> Option<Event> {
        let (d, next) = self.current.as_mut()?;
        let span = d.spans.get(*next)?.clone();
        *next += 1;
        Some(Event::in_span(&d.frame, span))
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.key)
            .finish()
    }
}

impl Stream for Subscription {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(e) = self.next_buffered() {
                return Poll::Ready(Some(e));
            }
            match self.deliveries.poll_recv(cx) {
                Poll::Ready(Some(d)) => self.take(d),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Unsubscribe { key: self.key });
    }
}
