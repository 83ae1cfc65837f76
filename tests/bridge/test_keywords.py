"""Keyword search: what an advisor types finds names however they were accented or capitalised."""

from __future__ import annotations

import pytest

from bridge.keywords import matches, normalise


@pytest.mark.parametrize(
    "text, folded",
    [
        ("Facturación", "facturacion"),
        ("  Équipe   Ñandú\tSÜD ", "equipe nandu sud"),
        ("ﬁnance", "finance"),  # a ligature is two letters
        ("Straße", "strasse"),
        ("", ""),
    ],
)
def test_text_is_folded_without_accents_case_or_extra_spaces(text: str, folded: str) -> None:
    assert normalise(text) == folded


def test_a_prefix_without_its_accent_finds_an_accented_name() -> None:
    assert matches("factura", "Facturación")
    assert matches("FACTURACIÓN", "facturacion")


def test_a_word_inside_another_word_is_not_a_match() -> None:
    assert not matches("tura", "Facturación")


def test_every_word_of_the_query_must_match_some_text() -> None:
    assert matches("sup bill", "support/billing", "Billing and invoices")
    assert matches("ana fact", "@ana:example.org", "Facturación")
    assert not matches("sup sales", "support/billing", "Billing and invoices")


def test_paths_and_matrix_ids_are_searched_by_their_parts() -> None:
    assert matches("billing", "support/billing")
    assert matches("ana", "@ana:example.org")
    assert matches("es", "billing-es")


@pytest.mark.parametrize("query", ["", "   ", "/"])
def test_an_empty_query_matches_nothing(query: str) -> None:
    assert not matches(query, "anything")
