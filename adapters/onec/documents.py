"""A 1C base's invoices, payments and customer orders, filed as events of their deals.

1C has no change feed and its ``Date`` is editable (back-dating; a bank statement loaded in the
morning carries yesterday's dates; a draft is posted days later), so each run re-reads a rolling
window: documents dated after ``min(bookmark - overlap, now - recheck)``. What was already filed
is recognised by a per-document memory holding a fingerprint of the document's content (orders:
their status), and by the inbox's dedup key (the document's ``Ref_Key`` and ``DataVersion``):
a restart anywhere re-reads a little and files nothing twice.

Paging is by date (``adapters.paging.DateSkipPaginator``): ``Date ge D`` ordered by ``Date,
Ref_Key`` with ``$skip`` counting only the documents already seen *at* date D, so an insert or
delete elsewhere cannot shift a page. The entity's bookmark is saved after every page: the last
date fully behind us.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from adapters.contracts import DocumentFiling
from adapters.onec.linking import Linker, LinkSubject
from adapters.onec.mapping import Document, EntityMap
from adapters.paging import DateSkipPaginator
from domain import Event, EventKind, EventSource
from domain.bookmarks import Bookmark
from domain.errors import NotFoundError
from domain.keys import document_key

if TYPE_CHECKING:
    from adapters.onec.adapter import OneCAdapter

log = logging.getLogger(__name__)

KINDS = {
    "invoice": EventKind.INVOICE_ISSUED,
    "payment": EventKind.PAYMENT_RECEIVED,
    "order": EventKind.ORDER_STATUS_CHANGED,
}
_CENT = 0.005


def poll(src: OneCAdapter, filing: DocumentFiling, linker: Linker) -> int:
    """One polling run of the base; returns how many events were queued for the deal CRM."""
    settings = src.settings
    overlap = timedelta(seconds=settings.poll_overlap)
    recheck = timedelta(seconds=settings.recheck)
    src.begin_run()
    run = _Run(src, filing, linker)
    queued = 0
    for emap in src.document_entities():
        try:
            # A first run starts as far back as every run re-reads.
            queued += run.entity(emap, overlap=overlap, recheck=recheck, lookback=recheck, page_size=src.page_size)
        except NotFoundError as exc:
            # A set this base does not publish (no cash desk, say) must not stop the others;
            # its bookmark stays where it was, so publishing it later loses nothing.
            log.warning(
                "1c entity set not readable crm=%s entity=%s set=%s error=%s", src.name, emap.key, emap.set, exc
            )
    return queued


class _Run:
    """State of one polling run."""

    def __init__(self, src: OneCAdapter, filing: DocumentFiling, linker: Linker) -> None:
        self.src, self.filing, self.linker = src, filing, linker
        self.deal_crm = linker.deal_adapter.name
        self.local_now = src.to_local(filing.now)

    def entity(
        self, emap: EntityMap, *, overlap: timedelta, recheck: timedelta, lookback: timedelta, page_size: int
    ) -> int:
        stream = emap.key
        bookmark = self.filing.bookmark(stream)
        cursor = bookmark.position if bookmark else None
        since = min(cursor - overlap, self.local_now - recheck) if cursor else self.local_now - lookback
        pager = DateSkipPaginator(since, page_size, crm=self.src.name, method=f"GET {emap.set}")
        seen, queued = 0, 0
        while not pager.finished:
            page = self.src.documents_page(emap, pager.moment, skip=pager.skip, top=page_size)
            memory = self.filing.remembered(stream, [d.ref for d in page])
            for doc in page:
                seen += 1
                queued += self.document(emap, doc, memory.get(doc.ref))
            pager.advance([(d.date, d.ref) for d in page])
            if not pager.finished:
                # Checkpoint: every document dated before the pager's moment is behind us.
                self._save(stream, pager.moment, complete=False)
        # A whole run read everything up to the moment it asked: the bookmark can move to now.
        self._save(stream, max(pager.moment, self.local_now), complete=True)
        log.info(
            "polled 1c crm=%s entity=%s since=%s seen=%d queued=%d",
            self.src.name,
            emap.key,
            since.isoformat(),
            seen,
            queued,
        )
        return queued

    def _save(self, stream: str, position: datetime, *, complete: bool) -> None:
        self.filing.save_bookmark(stream, Bookmark(position, complete))

    # --- one document --------------------------------------------------------------------------

    def document(self, emap: EntityMap, doc: Document, memory: dict[str, Any] | None) -> int:
        """File one document change; 1 when an event was queued."""
        if not doc.counts:
            return 0  # a draft, a deletion mark or an annulled invoice: nothing to tell the deal
        fingerprint = _fingerprint(doc)
        if memory is not None:
            if doc.document == "order" and memory.get("status") == doc.status[:100]:
                return 0  # an order edited without a status change
            if doc.document != "order" and memory.get("fp") == fingerprint:
                return 0  # re-posted or re-saved: the same document as before
        data, subject = self._data(emap, doc, memory)
        link = self.linker.link(subject)
        if link.deal_id is None:
            self._unlinked(emap, doc, link.reason)
            return 0  # no memory written: a deal field filled in later links it on a later run
        data["linked_by"] = link.strategy
        event = Event(
            crm=self.deal_crm,
            kind=KINDS[doc.document],
            deal_id=link.deal_id,
            occurred_at=self.src.to_utc(doc.date),
            dedup_key=document_key(self.src.name, emap.key, doc.ref, doc.version),
            source=EventSource.DOCUMENT,
            data=data,
        )
        # The memory is kept after the event: a crash in between re-files the same dedup key, which
        # the inbox drops. It holds 200 characters: short keys, Cyrillic unescaped, a status capped.
        filed = {"v": doc.version[:40], "fp": fingerprint, "status": doc.status[:100], "deal": link.deal_id[:20]}
        return int(self.filing.file(event, emap.key, doc.ref, filed))

    def _unlinked(self, emap: EntityMap, doc: Document, reason: str) -> None:
        self.filing.unlinked(
            ref=doc.ref,
            version=doc.version,
            message=f"{emap.key} {doc.number}: {reason}",
            detail={"set": emap.set, "ref": doc.ref, "version": doc.version},
        )
        log.info(
            "1c document not linked crm=%s entity=%s number=%s reason=%s", self.src.name, emap.key, doc.number, reason
        )

    def _data(
        self, emap: EntityMap, doc: Document, memory: dict[str, Any] | None
    ) -> tuple[dict[str, Any], LinkSubject]:
        """The event's normalised data, and what linking may use."""
        party = self.src.counterparty(doc.counterparty_ref)
        when = self.src.to_utc(doc.date)
        data: dict[str, Any] = {
            "source": f"onec:{self.src.name}",
            "document": doc.document,
            "entity": emap.key,
            "ref": doc.ref,
            "version": doc.version,
            "number": doc.number,
            "date": when.astimezone(self.src.tz).isoformat(),
            "amount": doc.amount,
            "currency": self.src.currency_code(doc),
            "counterparty": party.name if party else "",
            "counterparty_ref": doc.counterparty_ref,
            "inn": party.inn if party else "",
            "kpp": party.kpp if party else "",
            "comment": doc.comment,
        }
        texts = [doc.comment, doc.number, *doc.texts]
        refs = [doc.ref]
        if doc.document == "invoice":
            data["order_ref"] = doc.basis_ref or None
            refs.append(doc.basis_ref)
        elif doc.document == "payment":
            self._payment(doc, data, texts, refs)
        elif doc.document == "order":
            data["status"] = doc.status
            data["previous_status"] = (memory or {}).get("status")
            data["paid"] = bool(self.src.order_paid(doc.ref))
            data["shipment_requested"] = doc.status in self.src.shipment_statuses
        subject = LinkSubject(
            texts=tuple(t for t in texts if t),
            document_refs=tuple(r for r in refs if r),
            counterparty_ref=doc.counterparty_ref,
            inn=party.inn if party else "",
        )
        return data, subject

    def _payment(self, doc: Document, data: dict[str, Any], texts: list[str], refs: list[str]) -> None:
        """Which invoice a payment pays and how much of it is paid so far (this payment included).

        "So far" is by (Date, Number, Ref_Key) among posted payments, not by what this run happens to
        see, so the figures are the same whenever (and however often) the payment is read.
        """
        invoice_ref = doc.invoices[0][0] if doc.invoices else ""
        invoice = self.src.get_document("invoice", invoice_ref) if invoice_ref else None
        data.update(
            {
                "invoice_ref": invoice_ref or None,
                "invoice_number": invoice.number if invoice else None,
                "invoice_amount": invoice.amount if invoice else None,
                "order_ref": (doc.orders or [None])[0],
                "invoices": [r for r, _ in doc.invoices],
            }
        )
        refs.extend(r for r, _ in doc.invoices)
        refs.extend(doc.orders)
        if invoice is None:
            data.update({"paid_total": doc.amount, "paid_in_full": False, "first_payment": True, "partial": False})
            return
        texts.extend([invoice.comment, invoice.number])
        refs.append(invoice.basis_ref)
        me = (doc.date, doc.number, doc.ref)  # 1C numbers grow within a day: they break same-second ties
        earlier = [
            (d, amount)
            for d, amount in self.src.payments_for_invoice(invoice_ref)
            if d.counts and (d.date, d.number, d.ref) <= me
        ]
        if not any(d.ref == doc.ref for d, _ in earlier):  # read before this payment's rows were visible
            earlier.append((doc, dict(doc.invoices).get(invoice_ref, doc.amount)))
        paid = round(sum(amount for _, amount in earlier), 2)
        full = invoice.amount > 0 and paid >= invoice.amount - _CENT
        data.update(
            {
                "paid_total": paid,
                "paid_in_full": full,
                "first_payment": len(earlier) == 1,
                "partial": not full and paid > 0,
            }
        )


def _fingerprint(doc: Document) -> str:
    """What makes a document change worth telling the deal about (not its DataVersion alone)."""
    facts = [
        doc.number,
        doc.date.isoformat(),
        doc.amount,
        doc.currency_ref,
        doc.counterparty_ref,
        doc.status,
        sorted(doc.invoices),
        sorted(doc.orders),
        doc.basis_ref,
    ]
    return hashlib.sha256(json.dumps(facts, ensure_ascii=False, default=str).encode()).hexdigest()[:16]
