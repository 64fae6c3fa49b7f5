#!/usr/bin/env python3
"""Generate the synthetic marketing warehouse of the example project.

Two years (2024-01-01 to 2025-12-31) of a B2B software company's marketing and sales data across
six channels, written as one CSV file per table:

    ad_spend, web_sessions, leads, opportunities, customers, orders, subscriptions,
    email_sends, email_list, social_posts, social_followers, nps_responses

Usage::

    python examples/marketing/generate.py                     # the shipped data set (scale 1)
    python examples/marketing/generate.py --scale 200 --out /tmp/big   # millions of leads

The output depends only on ``--seed`` and ``--scale``: the same pair always gives byte-identical
files. Only the standard library is used, and rows are written as they are generated, so large
scales need little memory.

CSV conventions: a header row; dates as ``2025-01-31``; timestamps as ``2025-01-31 14:05:00``
(local time, no zone); an empty field is NULL; booleans are ``true``/``false``; money has two
decimals.

Deliberate irregularities, which the tests of the engine rely on:

* ``organic`` and ``referral`` are free channels: they never appear in ``ad_spend`` and their
  leads have no campaign.
* ``content`` spends nothing in August 2024 (its leads that month have no campaign).
* ``email`` spends money in May 2024 but has no leads that month (a form-tracking outage).
* No NPS survey went out in August 2024, so that month has no responses at all; several
  (month, channel) pairs have none either, because few customers answer.
* About 1% of leads have no industry and about 0.5% have no channel.
* About 10% of the leads with an opportunity have a second one (leads to opportunities is
  one-to-many).

Snapshot cadences: ``subscriptions`` has one row per active customer on every Sunday and on the
last day of every month (a daily table would be too big to ship); ``email_list`` and
``social_followers`` have one row per day (per network for followers).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import math
import random
from itertools import accumulate
from pathlib import Path

DEFAULT_SEED = 42
DEFAULT_OUT = Path(__file__).resolve().parent / "data"

FIRST_DAY = dt.date(2024, 1, 1)
LAST_DAY = dt.date(2025, 12, 31)
N_DAYS = (LAST_DAY - FIRST_DAY).days + 1
DAY = 86_400
HORIZON = N_DAYS * DAY  # seconds from FIRST_DAY 00:00: nothing happens at or after this instant

# Calendar lookups by day index (0 = 2024-01-01).
DATES = [FIRST_DAY + dt.timedelta(days=i) for i in range(N_DAYS)]
DATE_STR = [d.isoformat() for d in DATES]
SNAPSHOT_DAYS = [i for i, d in enumerate(DATES)
                 if d.weekday() == 6 or (d + dt.timedelta(days=1)).day == 1]

CHANNELS = ("paid_social", "ppc", "email", "organic", "content", "referral")
FREE_CHANNELS = ("organic", "referral")

# name, channel, first day, last day, typical daily budget in dollars at scale 1
CAMPAIGNS = (
    ("ps_brand_awareness", "paid_social", "2024-01-01", "2025-12-31", 120),
    ("ps_lead_gen", "paid_social", "2024-03-01", "2025-12-31", 170),
    ("ps_retargeting", "paid_social", "2024-01-15", "2025-09-30", 60),
    ("ppc_brand", "ppc", "2024-01-01", "2025-12-31", 80),
    ("ppc_generic", "ppc", "2024-01-01", "2025-12-31", 240),
    ("ppc_competitor", "ppc", "2024-06-01", "2025-12-31", 110),
    ("em_newsletter", "email", "2024-01-01", "2025-12-31", 18),
    ("em_nurture", "email", "2024-01-01", "2025-12-31", 12),
    ("ct_webinars", "content", "2024-01-01", "2025-12-31", 45),
    ("ct_syndication", "content", "2024-02-01", "2025-12-31", 70),
)
NO_SPEND = {("content", 2024, 8)}   # content paused all paid activity in August 2024
NO_LEADS = {("email", 2024, 5)}     # email form tracking broken in May 2024: spend, no leads
NO_NPS_MONTHS = {(2024, 8)}         # NPS survey paused in August 2024

# Multipliers: a Q4 peak, a summer dip, steady growth, quiet weekends.
SEASON = {1: 0.95, 2: 1.0, 3: 1.05, 4: 1.0, 5: 0.95, 6: 0.85, 7: 0.72, 8: 0.68, 9: 1.0,
          10: 1.12, 11: 1.3, 12: 1.15}
WEEKDAY = (1.0, 1.05, 1.05, 1.0, 0.9, 0.5, 0.45)
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 4, 8, 14, 18, 18, 16, 12, 15, 17, 16, 13, 10, 7, 5, 4, 3, 2, 1)

# Leads and sessions per day at scale 1, before the multipliers.
LEAD_RATE = {"paid_social": 1.9, "ppc": 2.3, "email": 0.9, "organic": 1.6, "content": 1.3,
             "referral": 0.8}
SESSION_RATE = {"paid_social": 2.4, "ppc": 3.0, "email": 1.2, "organic": 4.6, "content": 1.8,
                "referral": 1.0}
BOUNCE = {"paid_social": 0.55, "ppc": 0.45, "email": 0.35, "organic": 0.4, "content": 0.5,
          "referral": 0.3}
LANDING_PAGES = {
    "paid_social": (("/", 2), ("/demo", 3), ("/features", 2), ("/pricing", 1)),
    "ppc": (("/", 2), ("/pricing", 4), ("/demo", 3), ("/features", 2)),
    "email": (("/blog", 3), ("/webinars", 2), ("/pricing", 1), ("/", 1)),
    "organic": (("/", 4), ("/blog", 5), ("/features", 2), ("/pricing", 2), ("/docs", 2)),
    "content": (("/blog", 4), ("/webinars", 3), ("/guides", 3)),
    "referral": (("/", 3), ("/pricing", 2), ("/partners", 2)),
}

INDUSTRIES = (("software", 30), ("financial_services", 14), ("healthcare", 12),
              ("manufacturing", 12), ("retail", 10), ("education", 8),
              ("professional_services", 14))
COMPANY_SIZES = (("1-10", 30), ("11-50", 30), ("51-200", 20), ("201-1000", 13), ("1000+", 7))
FIT = {"1-10": 0.35, "11-50": 0.5, "51-200": 0.62, "201-1000": 0.68, "1000+": 0.7}
CHANNEL_FIT = {"paid_social": 0.8, "ppc": 0.95, "email": 1.0, "organic": 1.0, "content": 1.05,
               "referral": 1.2}
CHANNEL_CONVERSION = {"paid_social": 0.75, "ppc": 0.95, "email": 1.0, "organic": 1.0,
                      "content": 1.1, "referral": 1.35}
# Stage delays scale with the channel: content leads move fastest, ppc leads slowest.
CHANNEL_SPEED = {"paid_social": 1.1, "ppc": 1.2, "email": 0.9, "organic": 1.0, "content": 0.5,
                 "referral": 0.8}
STAGE_MEAN_DAYS = (4, 9, 14, 28)  # created -> mql -> sql -> opportunity -> customer

PLANS = ("starter", "pro", "enterprise")
PLAN_PRICE = {"starter": 49, "pro": 199, "enterprise": 899}
PLAN_BY_SIZE = {"1-10": (78, 21, 1), "11-50": (55, 40, 5), "51-200": (25, 60, 15),
                "201-1000": (10, 55, 35), "1000+": (3, 37, 60)}
SEATS = {"starter": (1,), "pro": (1, 1, 2, 3), "enterprise": (1, 2, 3, 5)}
MONTHLY_CHURN = {"starter": 0.045, "pro": 0.025, "enterprise": 0.012}
PRODUCTS = (("seat_pack", 40), ("onboarding", 15), ("training", 20), ("premium_support", 25))
NPS_MIX = {  # promoter, passive, detractor
    "paid_social": (30, 35, 35), "ppc": (38, 34, 28), "email": (42, 33, 25),
    "organic": (45, 35, 20), "content": (50, 30, 20), "referral": (60, 30, 10), None: (40, 33, 27),
}
NETWORKS = ("linkedin", "x", "instagram", "facebook")
POST_PROBABILITY = {"linkedin": 0.6, "x": 0.8, "instagram": 0.5, "facebook": 0.35}
START_FOLLOWERS = {"linkedin": 4200, "x": 2600, "instagram": 3100, "facebook": 1800}
FOLLOWER_GAIN = {"linkedin": 4.0, "x": 2.2, "instagram": 3.0, "facebook": 0.6}

TABLES = {
    "ad_spend": ("spend_date", "channel", "campaign", "spend"),
    "web_sessions": ("session_id", "started_at", "channel", "landing_page", "pages_viewed",
                     "duration_seconds", "is_bounce"),
    "leads": ("lead_id", "created_at", "channel", "campaign", "industry", "company_size",
              "is_qualified", "mql_at", "sql_at", "opportunity_at", "customer_at", "customer_id"),
    "opportunities": ("opportunity_id", "lead_id", "created_at", "channel", "amount", "stage",
                      "closed_at"),
    "customers": ("customer_id", "lead_id", "acquired_at", "channel", "industry", "plan",
                  "churned_at"),
    "orders": ("order_id", "customer_id", "ordered_at", "amount", "status", "product"),
    "subscriptions": ("snapshot_date", "customer_id", "plan", "mrr", "channel"),
    "email_sends": ("send_id", "sent_at", "campaign", "contact_id", "delivered", "inbox",
                    "opened", "clicked", "unsubscribed", "bounced", "channel"),
    "email_list": ("snapshot_date", "subscribers", "new_subscribers", "unsubscribes", "channel"),
    "social_posts": ("post_id", "posted_at", "network", "channel", "likes", "comments", "shares",
                     "saves", "clicks"),
    "social_followers": ("snapshot_date", "network", "followers", "channel"),
    "nps_responses": ("response_id", "responded_at", "customer_id", "channel", "score"),
}


# --------------------------------------------------------------------------- helpers

def day_index(iso: str) -> int:
    return (dt.date.fromisoformat(iso) - FIRST_DAY).days


def factor(day: int) -> float:
    """Seasonality x growth x weekday for a day index."""
    date = DATES[day]
    growth = 1.0 + 0.6 * day / (N_DAYS - 1)
    return SEASON[date.month] * growth * WEEKDAY[date.weekday()]


def month_of(day: int) -> tuple[int, int]:
    date = DATES[day]
    return date.year, date.month


def timestamp(seconds: int) -> str:
    """Seconds since 2024-01-01 00:00:00 -> 'YYYY-MM-DD HH:MM:SS'."""
    day, rest = divmod(seconds, DAY)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{DATE_STR[day]} {hour:02d}:{minute:02d}:{second:02d}"


def money(amount: float) -> str:
    """A non-negative amount rounded to whole cents, written with two decimals."""
    cents = int(round(amount * 100))
    return f"{cents // 100}.{cents % 100:02d}"


def boolean(value: bool) -> str:
    return "true" if value else "false"


class Picker:
    """Weighted choice with precomputed cumulative weights (fast and deterministic)."""

    def __init__(self, pairs):
        self.items = [item for item, _ in pairs]
        self.cumulative = list(accumulate(weight for _, weight in pairs))

    def __call__(self, rng: random.Random):
        x = rng.random() * self.cumulative[-1]
        return self.items[bisect.bisect_right(self.cumulative, x)]


HOUR = Picker(list(enumerate(HOUR_WEIGHTS)))
INDUSTRY = Picker(INDUSTRIES)
COMPANY_SIZE = Picker(COMPANY_SIZES)
PLAN_FOR_SIZE = {size: Picker(list(zip(PLANS, weights))) for size, weights in PLAN_BY_SIZE.items()}
PRODUCT = Picker(PRODUCTS)
LANDING = {channel: Picker(pages) for channel, pages in LANDING_PAGES.items()}
NPS_KIND = {channel: Picker(list(zip("PAD", mix))) for channel, mix in NPS_MIX.items()}
DETRACTOR_SCORE = Picker([(0, 1), (1, 1), (2, 1), (3, 2), (4, 3), (5, 5), (6, 7)])
EXTRA_ORDERS = Picker([(2, 40), (3, 25), (4, 15), (5, 12), (6, 8)])


def time_of_day(rng: random.Random) -> int:
    return HOUR(rng) * 3600 + rng.randrange(3600)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw: Knuth's method for small means, a rounded normal for large ones."""
    if lam <= 0:
        return 0
    if lam < 30:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))


def active_campaigns(channel: str, day: int) -> list[tuple[str, int]]:
    """(campaign, daily budget) of the channel's campaigns spending on that day."""
    if channel in FREE_CHANNELS or (channel, *month_of(day)) in NO_SPEND:
        return []
    return [(name, budget) for name, ch, first, last, budget in CAMPAIGNS
            if ch == channel and day_index(first) <= day <= day_index(last)]


ACTIVE = {(channel, day): active_campaigns(channel, day)
          for channel in CHANNELS for day in range(N_DAYS)}
CAMPAIGN_PICKER = {key: Picker(campaigns) for key, campaigns in ACTIVE.items() if campaigns}


class Writers:
    """One csv.writer per table, all open at once so rows can be streamed."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.handles = {}
        self.writers = {}
        for table, columns in TABLES.items():
            handle = open(out / f"{table}.csv", "w", newline="", encoding="utf-8")
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            self.handles[table] = handle
            self.writers[table] = writer

    def __getitem__(self, table: str):
        return self.writers[table]

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


# --------------------------------------------------------------------------- tables

def write_ad_spend(w: Writers, rng: random.Random, scale: float) -> None:
    writer = w["ad_spend"]
    for day in range(N_DAYS):
        f = factor(day) * scale
        for channel in CHANNELS:
            for campaign, budget in ACTIVE[channel, day]:
                spend = budget * f * rng.uniform(0.8, 1.2)
                writer.writerow((DATE_STR[day], channel, campaign, money(spend)))


def write_web_sessions(w: Writers, rng: random.Random, scale: float) -> None:
    writer = w["web_sessions"]
    session_id = 0
    for day in range(N_DAYS):
        f = factor(day) * scale
        sessions = []
        for channel in CHANNELS:
            for _ in range(poisson(rng, SESSION_RATE[channel] * f)):
                sessions.append((day * DAY + time_of_day(rng), channel))
        sessions.sort()
        for started, channel in sessions:
            session_id += 1
            if rng.random() < BOUNCE[channel]:
                pages, duration = 1, rng.randrange(0, 90)
            else:
                pages = 2
                while pages < 30 and rng.random() < 0.55:
                    pages += 1
                duration = sum(rng.randrange(15, 150) for _ in range(pages))
            writer.writerow((session_id, timestamp(started), channel, LANDING[channel](rng),
                             pages, duration, boolean(pages == 1)))


class LeadFunnel:
    """Leads with their lifecycle, and everything that follows from them: opportunities,
    customers, their orders, subscription snapshots and NPS answers."""

    def __init__(self, w: Writers, rng: random.Random, scale: float):
        self.w, self.rng, self.scale = w, rng, scale
        self.opportunity_id = 0
        self.customer_id = 0
        self.order_id = 0
        self.response_id = 0

    def run(self) -> None:
        rng = self.rng
        lead_id = 0
        for day in range(N_DAYS):
            f = factor(day) * self.scale
            todays = []
            for channel in CHANNELS:
                if (channel, *month_of(day)) in NO_LEADS:
                    continue
                for _ in range(poisson(rng, LEAD_RATE[channel] * f)):
                    todays.append((day * DAY + time_of_day(rng), channel))
            todays.sort()
            for created, channel in todays:
                lead_id += 1
                self.lead(lead_id, created, channel, day)

    def lead(self, lead_id: int, created: int, channel: str, day: int) -> None:
        rng = self.rng
        picker = CAMPAIGN_PICKER.get((channel, day))
        campaign = picker(rng) if picker else None
        industry = INDUSTRY(rng) if rng.random() >= 0.01 else None
        size = COMPANY_SIZE(rng)
        qualified = rng.random() < min(0.95, FIT[size] * CHANNEL_FIT[channel])
        conversion = CHANNEL_CONVERSION[channel]
        stage_probability = (0.8 if qualified else 0.12, 0.5 * conversion, 0.6, 0.42 * conversion)
        stages: list[int] = []
        won = False  # the deal is won (possibly after the end of the data)
        t = created
        for probability, mean_days in zip(stage_probability, STAGE_MEAN_DAYS):
            if rng.random() >= probability:
                break
            if len(stages) == 3:
                won = True
            t += 900 + int(rng.expovariate(1.0) * mean_days * CHANNEL_SPEED[channel] * DAY)
            if t >= HORIZON:
                break
            stages.append(t)
        if rng.random() < 0.005:
            channel, campaign = None, None  # lost attribution
        customer_id = None
        plan = PLAN_FOR_SIZE[size](rng) if len(stages) >= 3 else None
        if len(stages) == 4:
            self.customer_id += 1
            customer_id = self.customer_id
        stage_times = [timestamp(s) for s in stages] + [None] * (4 - len(stages))
        self.w["leads"].writerow((lead_id, timestamp(created), channel, campaign, industry, size,
                                  boolean(qualified), *stage_times, customer_id))
        if plan is not None:
            self.opportunities(lead_id, channel, stages, won, plan)
        if customer_id is not None:
            self.customer(customer_id, lead_id, stages[3], channel, industry, plan)

    def opportunities(self, lead_id, channel, stages, won, plan) -> None:
        rng = self.rng
        writer = self.w["opportunities"]
        opened = stages[2]
        yearly = PLAN_PRICE[plan] * rng.choice(SEATS[plan]) * 12
        amount = yearly * rng.uniform(0.85, 1.15)
        if len(stages) == 4:
            stage, closed = "won", stages[3]
        elif won:
            stage, closed = "open", None  # would be won after the end of the data
        else:
            closed = opened + 3600 + int(rng.expovariate(1.0) * 30 * DAY)
            stage, closed = ("lost", closed) if closed < HORIZON else ("open", None)
        self.opportunity_id += 1
        writer.writerow((self.opportunity_id, lead_id, timestamp(opened), channel, money(amount),
                         stage, timestamp(closed) if closed is not None else None))
        if rng.random() < 0.12:  # a second deal: an expansion, or a new attempt
            second = opened + int(rng.uniform(20, 200) * DAY)
            if second >= HORIZON:
                return
            closed = second + 3600 + int(rng.expovariate(1.0) * 40 * DAY)
            if closed >= HORIZON:
                stage, closed = "open", None
            elif len(stages) == 4 and rng.random() < 0.6:
                stage = "won"
            else:
                stage = "lost"
            self.opportunity_id += 1
            writer.writerow((self.opportunity_id, lead_id, timestamp(second), channel,
                             money(yearly * rng.uniform(0.2, 0.6)), stage,
                             timestamp(closed) if closed is not None else None))

    def customer(self, customer_id, lead_id, acquired, channel, industry, plan) -> None:
        rng = self.rng
        acquired_day = acquired // DAY
        lifetime_days = rng.expovariate(MONTHLY_CHURN[plan] / 30.44)
        churn_day = acquired_day + 1 + int(lifetime_days)
        churned = churn_day if churn_day < N_DAYS else None
        self.w["customers"].writerow((customer_id, lead_id, DATE_STR[acquired_day], channel,
                                      industry, plan,
                                      DATE_STR[churned] if churned is not None else None))
        active_until = min(HORIZON, churned * DAY) if churned is not None else HORIZON
        mrr = PLAN_PRICE[plan] * rng.choice(SEATS[plan]) * rng.choice((1.0, 1.0, 0.9, 0.8))
        self.orders(customer_id, acquired, active_until, mrr)
        self.subscriptions(customer_id, acquired_day, churned, plan, mrr, channel)
        self.nps(customer_id, acquired, active_until, channel)

    def orders(self, customer_id, acquired, active_until, mrr) -> None:
        rng = self.rng
        count = 1 if rng.random() < 0.6 else EXTRA_ORDERS(rng)
        first = acquired + int(rng.random() * min(2 * DAY, active_until - acquired))
        times = [first] + sorted(int(rng.uniform(first, active_until)) for _ in range(count - 1))
        for i, ordered in enumerate(times):
            ordered = min(ordered, active_until - 1)
            if i == 0:
                product, amount = "annual_license", mrr * 12 * rng.uniform(0.95, 1.0)
            else:
                product = PRODUCT(rng)
                amount = {"seat_pack": mrr * rng.uniform(1, 4),
                          "onboarding": rng.uniform(1200, 1800),
                          "training": rng.uniform(500, 1100),
                          "premium_support": rng.uniform(1800, 3000)}[product]
            x = rng.random()
            status = "paid" if x < 0.9 else "refunded" if x < 0.96 else "pending"
            self.order_id += 1
            self.w["orders"].writerow((self.order_id, customer_id, timestamp(ordered),
                                       money(amount), status, product))

    def subscriptions(self, customer_id, acquired_day, churned, plan, mrr, channel) -> None:
        rng = self.rng
        writer = self.w["subscriptions"]
        upgrade_day = None
        if plan != "enterprise" and rng.random() < 0.12:
            upgrade_day = acquired_day + int(rng.uniform(60, 300))
        end_day = churned if churned is not None else N_DAYS
        first = bisect.bisect_left(SNAPSHOT_DAYS, acquired_day)
        last = bisect.bisect_left(SNAPSHOT_DAYS, end_day)
        current_plan, current_mrr = plan, mrr
        for day in SNAPSHOT_DAYS[first:last]:
            if upgrade_day is not None and day >= upgrade_day and current_plan == plan:
                current_plan = PLANS[PLANS.index(plan) + 1]
                current_mrr = mrr * PLAN_PRICE[current_plan] / PLAN_PRICE[plan]
            writer.writerow((DATE_STR[day], customer_id, current_plan, money(current_mrr),
                             channel))

    def nps(self, customer_id, acquired, active_until, channel) -> None:
        rng = self.rng
        survey = acquired + 30 * DAY
        while survey < active_until:
            if rng.random() < 0.45:
                responded = survey + int(rng.expovariate(1.0) * 2 * DAY)
                if responded < active_until and month_of(responded // DAY) not in NO_NPS_MONTHS:
                    kind = NPS_KIND[channel](rng)
                    if kind == "P":
                        score = rng.choice((9, 10))
                    elif kind == "A":
                        score = rng.choice((7, 8))
                    else:
                        score = DETRACTOR_SCORE(rng)
                    self.response_id += 1
                    self.w["nps_responses"].writerow((self.response_id, timestamp(responded),
                                                      customer_id, channel, score))
            survey += int(rng.uniform(80, 100) * DAY)


def write_email(w: Writers, rng: random.Random, scale: float) -> None:
    """email_sends and the daily email_list snapshot (its unsubscribes include the sends')."""
    sends, lists = w["email_sends"], w["email_list"]
    subscribers = int(2400 * scale)
    send_id = 0
    for day in range(N_DAYS):
        date = DATES[day]
        growth = 1.0 + 0.6 * day / (N_DAYS - 1)
        batches = []
        if date.weekday() == 1 and (day // 7) % 2 == 0:       # every other Tuesday
            batches.append(("em_newsletter", 10 * 3600, poisson(rng, 60 * growth * scale)))
        if date.weekday() < 5:                                 # weekday drip
            batches.append(("em_nurture", 8 * 3600, poisson(rng, 2.5 * growth * scale)))
        unsubscribed_today = 0
        for campaign, at, count in batches:
            open_rate, click_rate = (0.3, 0.12) if campaign == "em_newsletter" else (0.4, 0.2)
            times = sorted(day * DAY + at + rng.randrange(4 * 3600) for _ in range(count))
            for sent in times:
                send_id += 1
                delivered = rng.random() < 0.97
                inbox = delivered and rng.random() < 0.9
                opened = delivered and rng.random() < (open_rate if inbox else 0.04)
                clicked = opened and rng.random() < click_rate
                unsubscribed = delivered and rng.random() < 0.004
                unsubscribed_today += unsubscribed
                sends.writerow((send_id, timestamp(sent), campaign,
                                rng.randint(1, max(1, subscribers)), boolean(delivered),
                                boolean(inbox), boolean(opened), boolean(clicked),
                                boolean(unsubscribed), boolean(not delivered), "email"))
        new = poisson(rng, 6 * factor(day) * scale)
        unsubscribes = unsubscribed_today + poisson(rng, 1.5 * scale)
        subscribers += new - unsubscribes
        lists.writerow((DATE_STR[day], subscribers, new, unsubscribes, "email"))


def write_social(w: Writers, rng: random.Random, scale: float) -> None:
    """social_posts and the daily social_followers snapshot per network."""
    posts, followers_writer = w["social_posts"], w["social_followers"]
    followers = {network: START_FOLLOWERS[network] * scale for network in NETWORKS}
    post_id = 0
    for day in range(N_DAYS):
        growth = 1.0 + 0.6 * day / (N_DAYS - 1)
        todays = []
        for network in NETWORKS:
            for _ in range(poisson(rng, POST_PROBABILITY[network] * scale)):
                todays.append((day * DAY + time_of_day(rng), network))
        todays.sort()
        for posted, network in todays:
            post_id += 1
            boosted = rng.random() < 0.15
            reach = followers[network] / scale * rng.uniform(0.05, 0.2) * (3 if boosted else 1)
            likes = int(reach * 0.04 * rng.lognormvariate(0, 0.5))
            comments = int(likes * rng.uniform(0.02, 0.12))
            shares = int(likes * rng.uniform(0.05, 0.25 if network == "x" else 0.12))
            saves = int(likes * rng.uniform(0.1, 0.3)) if network == "instagram" else \
                int(likes * rng.uniform(0.0, 0.05))
            clicks = int(reach * rng.uniform(0.005, 0.02) * (2 if boosted else 1))
            posts.writerow((post_id, timestamp(posted), network,
                            "paid_social" if boosted else "organic",
                            likes, comments, shares, saves, clicks))
        for network in NETWORKS:
            gain = rng.gauss(FOLLOWER_GAIN[network] * growth * SEASON[DATES[day].month],
                             3.0) * scale
            followers[network] = max(0.0, followers[network] + gain)
            followers_writer.writerow((DATE_STR[day], network, int(round(followers[network])),
                                       "organic"))


def generate(out: Path = DEFAULT_OUT, scale: float = 1.0, seed: int = DEFAULT_SEED) -> None:
    """Write every table of the warehouse into ``out``."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    writers = Writers(Path(out))
    try:
        # One random stream per family of tables, so that they do not disturb each other.
        write_ad_spend(writers, random.Random(f"{seed}/ad_spend"), scale)
        write_web_sessions(writers, random.Random(f"{seed}/web_sessions"), scale)
        LeadFunnel(writers, random.Random(f"{seed}/leads"), scale).run()
        write_email(writers, random.Random(f"{seed}/email"), scale)
        write_social(writers, random.Random(f"{seed}/social"), scale)
    finally:
        writers.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: examples/marketing/data)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies row counts and amounts (default 1: the shipped data)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default 42)")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    generate(args.out, args.scale, args.seed)


if __name__ == "__main__":
    main()
