"""Credentials never reach a message: ``redact`` for driver text, ``safe_url`` for URLs."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from connectors.secrets import redact, safe_url

SECRET = "s3cr3t"


def test_redact_removes_a_password_given_explicitly() -> None:
    message = f'FATAL: password authentication failed for user "u" (tried {SECRET})'

    assert redact(message, SECRET) == (
        'FATAL: password authentication failed for user "u" (tried ***)'
    )


def test_redact_removes_every_occurrence_of_every_given_secret() -> None:
    assert redact("a=one b=two a=one", "one", "two") == "a=*** b=*** a=***"


def test_redact_ignores_missing_and_empty_secrets() -> None:
    assert redact("nothing to hide", None, "") == "nothing to hide"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:s3cr3t@h/db", "postgresql://u:***@h/db"),
        (
            "cannot reach mysql+pymysql://root:s3cr3t@127.0.0.1:3306/fe: timed out",
            "cannot reach mysql+pymysql://root:***@127.0.0.1:3306/fe: timed out",
        ),
        (
            "oracle+oracledb://u:s3cr3t@h:1521/?service_name=FREEPDB1",
            "oracle+oracledb://u:***@h:1521/?service_name=FREEPDB1",
        ),
        ("sftp://:s3cr3t@files.example/in", "sftp://:***@files.example/in"),
        ("a://u:x@h and b://v:y@k", "a://u:***@h and b://v:***@k"),
    ],
)
def test_redact_removes_url_user_info_passwords(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_keeps_a_url_without_a_password() -> None:
    assert redact("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=h password=s3cr3t dbname=db", "host=h password=*** dbname=db"),
        ("host=h password='s3 cr3t' dbname=db", "host=h password=*** dbname=db"),
        ('password="s3 cr3t" port=5432', "password=*** port=5432"),
        ("PASSWORD = s3cr3t", "PASSWORD=***"),
        ("passwd: s3cr3t", "passwd=***"),
        ("pwd=s3cr3t", "pwd=***"),
        ("api token=s3cr3t", "api token=***"),
        ("secret:s3cr3t", "secret=***"),
    ],
)
def test_redact_removes_password_key_value_pairs(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_leaves_other_key_value_pairs_alone() -> None:
    text = "host=127.0.0.1 port=5432 user=exchange dbname=fe"

    assert redact(text) == text


@pytest.mark.parametrize("text", ['{"password": "s3cr3t"}', "{'password': 's3cr3t'}"])
def test_redact_removes_passwords_in_json_and_dict_dumps(text: str) -> None:
    assert SECRET not in redact(text)


def test_safe_url_hides_the_password() -> None:
    url = make_url(f"postgresql+psycopg://exchange:{SECRET}@10.1.2.3:5432/fe")

    assert safe_url(url) == "postgresql+psycopg://exchange:***@10.1.2.3:5432/fe"


def test_safe_url_hides_a_password_with_url_special_characters() -> None:
    url = make_url("mysql+pymysql://root:p%40ss%3Aw%2Frd@127.0.0.1:3306/fe")
    assert url.password == "p@ss:w/rd"

    shown = safe_url(url)

    assert shown == "mysql+pymysql://root:***@127.0.0.1:3306/fe"
    assert "p%40ss" not in shown and "p@ss" not in shown


def test_safe_url_keeps_a_url_without_a_password() -> None:
    url = make_url("oracle+oracledb://u@127.0.0.1:1521/?service_name=FREEPDB1")

    assert safe_url(url) == "oracle+oracledb://u@127.0.0.1:1521/?service_name=FREEPDB1"


def test_safe_url_hides_a_password_given_as_a_query_parameter() -> None:
    url = make_url(f"postgresql+psycopg://exchange@10.1.2.3/fe?password={SECRET}")

    assert SECRET not in safe_url(url)
