"""Property: whatever users do, in any order, with the clock moving and housekeeping ticking,
no subscription reaches a state the machine does not allow, every step is in its history and
the audit chain, and the engine delivers only to approved, unexpired, unsuspended subscriptions
of unsuspended departments (real exchange runs on SQLite front-ends)."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from exchange import audit
from exchange.flow import run_resource
from exchange.kernel.clock import today as shanghai_today
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition
from exchange.store.models import Delivery, Subscription
from exchange.workflow import service as svc
from exchange.workflow import states as st
from exchange.workflow.housekeeping import tick
from exchange.workflow.models import DepartmentSuspension, SlaClock, SubscriptionTransition
from tests.workflow_setup import add_people, form, open_city

REFUSED = (BadInput, Forbidden, IllegalTransition)
PEOPLE = ("admin", "market", "police", "tax", "hrss")
RESOURCES = ("COND", "OPEN", "POLICE")
STARS = svc.Stars(
    matches_description=3, data_quality=3, timeliness=3, implementation_service=3,
    review_efficiency=3,
)  # fmt: skip
EDGES = {(t.source, t.action, t.target) for t in st.TRANSITIONS}


class Workflow(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="wf-prop-"))
        self.ws = open_city(self.home, rows=5)
        self.people = add_people(self.ws)
        self.now = utcnow()
        self.ids: list[int] = []

    def teardown(self) -> None:
        self.ws.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def _pick(self, i: int) -> int:
        return self.ids[i % len(self.ids)] if self.ids else 10_000

    # -- actions -----------------------------------------------------------------------------

    @rule(
        who=hs.sampled_from(("tax", "hrss", "admin", "market")),
        resource=hs.sampled_from(RESOURCES),
        urgency=hs.sampled_from(("normal", "urgent", "critical")),
        days=hs.integers(1, 30),
    )
    def apply(self, who: str, resource: str, urgency: str, days: int) -> None:
        requester = "hrss" if who == "hrss" else "tax"
        f = form(
            resource, requester, urgency=urgency, usage_days=days,
            urgency_reason=None if urgency == "normal" else "急需",
            target_table=f"t_{resource.lower()}",
        )  # fmt: skip
        try:
            self.ids.append(svc.apply(self.ws, self.people[who], f, self.now).id)
        except REFUSED:
            pass

    @rule(i=hs.integers(0, 50), who=hs.sampled_from(PEOPLE), ok=hs.booleans(),
          fewer=hs.booleans())  # fmt: skip
    def review(self, i: int, who: str, ok: bool, fewer: bool) -> None:
        fields = ["id", "name"] if fewer else None
        try:
            svc.review(self.ws, self.people[who], self._pick(i), approve=ok, fields=fields,
                       reason="理由", now=self.now)  # fmt: skip
        except REFUSED:
            pass

    @rule(i=hs.integers(0, 50), who=hs.sampled_from(PEOPLE),
          action=hs.sampled_from(("withdraw", "sign_off", "evaluate", "report")))  # fmt: skip
    def requester_step(self, i: int, who: str, action: str) -> None:
        sid, p = self._pick(i), self.people[who]
        try:
            if action == "withdraw":
                svc.withdraw(self.ws, p, sid, "不再需要", self.now)
            elif action == "sign_off":
                svc.sign_off(self.ws, p, sid, self.now)
            elif action == "evaluate":
                svc.evaluate(self.ws, p, sid, STARS, None, self.now)
            else:
                svc.report_effectiveness(self.ws, p, sid, "成效", self.now)
        except REFUSED:
            pass

    @rule(i=hs.integers(0, 50), who=hs.sampled_from(("admin", "tax")),
          action=hs.sampled_from(("suspend", "resume", "deliver")))  # fmt: skip
    def platform_step(self, i: int, who: str, action: str) -> None:
        try:
            svc.admin_step(self.ws, self.people[who], self._pick(i), action, "运维", self.now)
        except REFUSED:
            pass

    @rule(hours=hs.integers(1, 24 * 100), policy=hs.sampled_from(("approve", "reject")))
    def time_passes(self, hours: int, policy: str) -> None:
        self.now += dt.timedelta(hours=hours)
        tick(self.ws, self.now, policy=policy)
        assert tick(self.ws, self.now, policy=policy).changed == 0  # idempotent

    @rule(resource=hs.sampled_from(RESOURCES))
    def exchange_runs(self, resource: str) -> None:
        today = shanghai_today()
        with self.ws.store.session() as s:
            suspended = set(
                s.scalars(
                    sa.select(DepartmentSuspension.department_code).where(
                        DepartmentSuspension.lifted_at.is_(None)
                    )
                )
            )
            allowed = {
                sub.id
                for sub in s.scalars(
                    sa.select(Subscription).where(Subscription.resource_code == resource)
                )
                if sub.status in st.DELIVERABLE
                and sub.valid_until >= today
                and sub.department_code not in suspended
            }
        summary = run_resource(self.ws, resource)
        with self.ws.store.session() as s:
            served = set(
                s.scalars(
                    sa.select(Delivery.subscription_id).where(Delivery.run_id == summary.run_id)
                )
            )
        assert served <= allowed, f"delivered to {served - allowed}, not deliverable"
        assert served == allowed  # and every deliverable one was served

    # -- what must always hold -----------------------------------------------------------------

    @invariant()
    def states_and_histories_are_legal(self) -> None:
        with self.ws.store.session() as s:
            subs = {x.id: x for x in s.scalars(sa.select(Subscription))}
            steps = s.scalars(
                sa.select(SubscriptionTransition).order_by(SubscriptionTransition.id)
            ).all()
            open_clocks = s.scalars(sa.select(SlaClock).where(SlaClock.stopped_at.is_(None))).all()
        last: dict[int, str] = {}
        suspended_from: dict[int, str] = {}
        for t in steps:
            assert t.from_state == last.get(t.subscription_id), t
            if t.action == "resume":
                assert t.to_state == suspended_from[t.subscription_id]
            elif t.from_state is not None:
                assert (t.from_state, t.action, t.to_state) in EDGES, t
            if t.to_state == st.SUSPENDED:
                suspended_from[t.subscription_id] = t.from_state or ""
            last[t.subscription_id] = t.to_state
        for sid, sub in subs.items():
            event(f"reached {sub.status}")
            assert st.is_legal_state(sub.status)
            assert last[sid] == sub.status
            if sub.status == st.SUSPENDED:
                assert sub.suspended_from in st.DELIVERABLE
            if sub.requested_fields is not None:
                assert set(sub.fields) <= set(sub.requested_fields)
        for clock in open_clocks:
            state = subs[clock.subscription_id].status
            if clock.kind != "effectiveness":
                assert state not in st.FINAL, (clock.kind, state)

    @invariant()
    def the_audit_chain_is_intact(self) -> None:
        with self.ws.store.session() as s:
            assert audit.check_chain(s).broken_id is None


TestWorkflow = Workflow.TestCase
TestWorkflow.settings = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
