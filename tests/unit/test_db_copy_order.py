"""The order `db copy` fills tables in: from the models' metadata, each table after those
it refers to; a cycle of foreign keys only where the schema breaks it."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table

from newsletter.db.copy import copy_order
from newsletter.db.models import Base
from newsletter.errors import NewsletterError


def test_every_table_of_the_schema_comes_after_the_tables_it_refers_to() -> None:
    order = [copy.table.name for copy in copy_order()]
    assert sorted(order) == sorted(Base.metadata.tables)
    for copy in copy_order():
        for key in copy.table.foreign_keys:
            if key.column.table is not copy.table and key.parent not in copy.later:
                assert order.index(key.column.table.name) < order.index(copy.table.name)


def test_a_sequences_current_version_is_filled_in_after_its_versions_are_copied() -> None:
    later = {copy.table.name: [c.name for c in copy.later] for copy in copy_order() if copy.later}
    assert later == {"sequences": ["current_version_id"]}


def test_a_cycle_the_schema_does_not_break_is_an_error_not_a_guess() -> None:
    metadata = MetaData()
    Table(
        "a", metadata, Column("id", Integer, primary_key=True), Column("b_id", ForeignKey("b.id"))
    )
    Table(
        "b", metadata, Column("id", Integer, primary_key=True), Column("a_id", ForeignKey("a.id"))
    )
    with pytest.raises(NewsletterError, match="db copy cannot order table"):
        copy_order(metadata)


def test_a_cycle_broken_on_a_column_that_may_not_be_null_is_an_error() -> None:
    metadata = MetaData()
    Table(
        "a",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("b_id", ForeignKey("b.id", use_alter=True), nullable=False),
    )
    Table(
        "b", metadata, Column("id", Integer, primary_key=True), Column("a_id", ForeignKey("a.id"))
    )
    with pytest.raises(NewsletterError, match=r"b_id closes a cycle .* may not be NULL"):
        copy_order(metadata)
