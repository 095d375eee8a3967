"""A deterministic enterprise registry (企业登记信息): the demo's and the benchmark's data.

Every value is a function of the row id, so any two runs, machines or databases produce the same
rows. Codes carry valid check characters (USCC per GB 32100-2015, resident ID per GB 11643-1999).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]
_ORG_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]
_RIC_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]

REGIONS = [
    "410402",
    "410403",
    "410404",
    "410411",
    "410421",
    "410422",
    "410423",
    "410425",
    "410481",
    "410482",
    "420102",
    "420103",
    "440103",
    "440104",
]
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
    "许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰文斌"
TRADE = [
    "鹰城",
    "中原",
    "平顶山",
    "汇通",
    "宏达",
    "兴业",
    "鑫源",
    "华瑞",
    "恒泰",
    "天成",
    "金鼎",
    "瑞丰",
]
BUSINESS = [
    "科技",
    "商贸",
    "建筑工程",
    "物流",
    "餐饮管理",
    "煤业",
    "新材料",
    "农业发展",
    "医药",
    "文化传媒",
]
FORMS = ["有限公司", "有限责任公司", "股份有限公司", "合伙企业（有限合伙）"]
STREETS = ["建设路", "中兴路", "矿工路", "开源路", "光明路", "湛河路", "新华路", "凌云路"]
INDUSTRIES = ["A01", "B06", "C13", "C26", "E47", "F51", "G54", "H62", "I65", "L72"]
SCOPE = (
    "许可项目：道路货物运输；建设工程施工；食品销售。一般项目：技术服务、技术开发、技术咨询、"
    "技术交流、技术转让、技术推广；信息系统集成服务；软件开发；办公用品销售；日用百货销售；"
    "机械设备租赁；广告设计、代理（除依法须经批准的项目外，凭营业执照依法自主开展经营活动）。"
)
EPOCH = dt.datetime(2024, 1, 1, 8, 0, 0)


def uscc_check(first17: str) -> str:
    """The 18th character of a unified social credit code."""
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - total % 31) % 31]


def org_code(body8: str) -> str:
    """A 9-character organisation code (GB 11714) with its check character."""
    total = sum(int(c) * w for c, w in zip(body8, _ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return body8 + ("X" if c == 10 else "0" if c == 11 else str(c))


def resident_id(region: str, birth: dt.date, seq: int) -> str:
    """An 18-digit resident ID number with a valid GB 11643 check digit."""
    body = f"{region}{birth:%Y%m%d}{seq % 1000:03d}"
    total = sum(int(c) * w for c, w in zip(body, _RIC_WEIGHTS, strict=True))
    return body + "10X98765432"[total % 11]


def enterprise_row(i: int) -> tuple[object, ...]:
    """Row ``i`` of the registry (16 columns, in catalog order)."""
    r = random.Random(i * 7919 + 17)
    region = REGIONS[i % len(REGIONS)]
    uscc17 = "91" + region + org_code(f"{(i * 48271) % 100_000_000:08d}")
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=r.randrange(0, 18_000))
    established = dt.date(1995, 1, 1) + dt.timedelta(days=r.randrange(0, 10_500))
    return (
        i,
        uscc17 + uscc_check(uscc17),
        f"{TRADE[i % len(TRADE)]}{BUSINESS[(i // 12) % len(BUSINESS)]}{i}号{FORMS[i % len(FORMS)]}",
        r.choice(SURNAMES) + r.choice(GIVEN) + r.choice(GIVEN),
        resident_id(region, birth, i),
        Decimal(r.randrange(10_000, 500_000_000)) / 100,
        established,
        EPOCH + dt.timedelta(seconds=i * 17),
        1 + i % 4,
        region,
        f"河南省平顶山市{STREETS[i % len(STREETS)]}{1 + i % 399}号",
        f"1{r.choice('3578')}{r.randrange(0, 1_000_000_000):09d}",
        INDUSTRIES[i % len(INDUSTRIES)],
        SCOPE[: 60 + i % 40],
        i % 10 != 0,
        None if i % 10 < 3 else f"备注{i}",
    )


def enterprise_rows(start: int, stop: int) -> Iterator[tuple[object, ...]]:
    """Rows ``start`` .. ``stop - 1``."""
    for i in range(start, stop):
        yield enterprise_row(i)


COLUMNS = [
    "id",
    "uscc",
    "name",
    "legal_person",
    "id_card",
    "reg_capital",
    "established",
    "updated_at",
    "status",
    "region_code",
    "address",
    "phone",
    "industry",
    "scope",
    "is_active",
    "remark",
]
