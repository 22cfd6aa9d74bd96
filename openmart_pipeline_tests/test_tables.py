"""Specifications of reading a domain table: one checked row per company, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openmart_pipeline.domains import EMPTY, HOSTED_SITE, INVALID_LABEL
from openmart_pipeline.tables import (
    COLUMN_MAP_ENV_VAR,
    DUPLICATE_TRACKING_ID,
    LOOKUP_COLUMNS,
    MISSING_COMPANY_NAME,
    ROW_REASONS,
    DomainTableError,
    parse_column_map,
    read_domain_table,
)

REAL_COMPANIES = Path(__file__).resolve().parents[1] / "data" / "domains" / "companies_real.csv"


def write_csv(tmp_path: Path, text: str, name: str = "companies.csv", **encoding) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding.get("encoding", "utf-8")))
    return path


@pytest.fixture(scope="module")
def real_table():
    return read_domain_table(REAL_COMPANIES)


# (data row, company name, expected domain, expected reason), picked by hand to cover
# every odd form the bundled file has.
REAL_ROWS = [
    pytest.param(1, "10up", "10up.com", None, id="plain-https"),
    pytest.param(2, "15Five", "15five.com", None, id="www-no-slash"),
    pytest.param(3, "18F", "gsa.gov", None, id="gov-subdomain"),
    pytest.param(43, "Amazon", "amazon.jobs", None, id="jobs-tld-with-path"),
    pytest.param(49, "apartment therapy", "apartmenttherapy.com", None, id="http-1"),
    pytest.param(64, "Atento", "gupy.io", HOSTED_SITE, id="gupy-host"),
    pytest.param(120, "Capital One", "capitalonecareers.com", None, id="careers-domain"),
    pytest.param(189, "CVS Health", "cvshealth.com", None, id="jobs-subdomain"),
    pytest.param(204, "DealDash", "dealdash.com", None, id="http-2"),
    pytest.param(205, "Deel", "deel.com", None, id="http-3"),
    pytest.param(245, "Epic Games", "epicgames.com", None, id="uppercase-path-1"),
    pytest.param(357, "Hotjar", "hotjar.com", None, id="careers-subdomain"),
    pytest.param(376, "Incsub", "incsub.com", None, id="duplicate-website-1a"),
    pytest.param(377, "inDrive", "incsub.com", None, id="duplicate-website-1b"),
    pytest.param(457, "Localistico", "localistico.com", None, id="markdown-1-fragment"),
    pytest.param(458, "Locus Robotics", "locusrobotics.com", None, id="markdown-2-careers"),
    pytest.param(459, "LogDNA", "logdna.com", None, id="markdown-3"),
    pytest.param(460, "LogDog", "log.dog", None, id="markdown-4-same-target"),
    pytest.param(461, "LogRocket", "logrocket.com", None, id="markdown-5-slash"),
    pytest.param(480, "Meant4", "meant4.com", None, id="angle-brackets"),
    pytest.param(483, "Medium", "medium.com", None, id="hosting-company-own-homepage"),
    pytest.param(519, "Netris", "netris.io", None, id="trailing-tab"),
    pytest.param(533, "O'Reilly Media", "oreilly.com", None, id="duplicate-website-2a"),
    pytest.param(534, "O'Reilly Online Learning", "oreilly.com", None, id="duplicate-website-2b"),
    pytest.param(586, "PNC Financial Services", "pnc.com", None, id="name-trailing-space-1"),
    pytest.param(635, "Remote Garage", "remotegarage.club", None, id="http-4"),
    pytest.param(744, "The Home Depot", "homedepot.com", None, id="careers-homedepot"),
    pytest.param(764, "Transition Technologies - Advanced Solutions", "tt.com.pl", None,
                 id="http-5-com-pl"),
    pytest.param(774, "Turing", "turing.com", None, id="name-trailing-space-2"),
    pytest.param(799, "Voxy", "lever.co", HOSTED_SITE, id="lever-host"),
    pytest.param(812, "WikiHow", "wikihow.com", None, id="uppercase-path-2"),
]  # fmt: skip


@pytest.mark.parametrize(("row_number", "company_name", "domain", "reason"), REAL_ROWS)
def test_real_companies_row_gets_its_domain_or_reason(
    real_table, row_number, company_name, domain, reason
):
    row = real_table.loc[real_table["row_number"] == row_number].iloc[0]

    assert row["company_name"] == company_name
    assert (row["domain"], row["reason"]) == (domain, reason)


def test_real_companies_every_row_is_kept_with_a_domain_or_reason(real_table):
    assert len(real_table) == 847
    assert list(real_table["row_number"]) == list(range(1, 848))
    assert real_table["tracking_id"].is_unique
    assert (real_table["domain"].notna() | real_table["reason"].notna()).all()
    assert set(real_table["reason"].dropna()) <= set(ROW_REASONS)


def test_real_companies_website_is_kept_as_given(real_table):
    by_row = real_table.set_index("row_number")["website"]

    assert by_row[519] == "https://www.netris.io\t"
    assert by_row[457] == "[https://localistico.com](https://localistico.com/team/#hiring)"
    assert by_row[480] == "<https://meant4.com>"


def test_read_domain_table_returns_exactly_the_lookup_columns(tmp_path):
    path = write_csv(tmp_path, "company_name,website,city\nAcme,https://acme.com/, Berlin \n")

    table = read_domain_table(path)

    assert tuple(table.columns) == LOOKUP_COLUMNS
    assert str(table["row_number"].dtype) == "int64"
    row = table.iloc[0].to_dict()
    assert row["source_file"] == "companies.csv"
    assert row["website"] == "https://acme.com/"
    assert row["city"] == "Berlin"
    assert row["state"] is None and row["country"] is None
    assert row["reason"] is None and row["message"] is None


@pytest.mark.parametrize(
    "delimiter",
    [
        pytest.param(",", id="comma"),
        pytest.param(";", id="semicolon"),
        pytest.param("\t", id="tab"),
    ],
)
def test_read_domain_table_finds_the_delimiter(tmp_path, delimiter):
    text = delimiter.join(["company_name", "website", "country"]) + "\n"
    text += delimiter.join(["Acme", "acme.com", "DE"]) + "\n"
    path = write_csv(tmp_path, text)

    table = read_domain_table(path)

    assert table.iloc[0][["company_name", "domain", "country"]].tolist() == [
        "Acme",
        "acme.com",
        "DE",
    ]


def test_read_domain_table_keeps_other_delimiters_inside_values(tmp_path):
    path = write_csv(tmp_path, "company_name;website\nAcme, Inc.;acme.com\nBeta\tLabs;beta.io\n")

    table = read_domain_table(path)

    assert table["company_name"].tolist() == ["Acme, Inc.", "Beta\tLabs"]
    assert table["domain"].tolist() == ["acme.com", "beta.io"]


def test_read_domain_table_reads_utf8_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffwebsite,company_name\nbücher.de,Bücher GmbH\n".encode())

    table = read_domain_table(path)

    row = table.iloc[0]
    assert (row["domain"], row["company_name"]) == ("xn--bcher-kva.de", "Bücher GmbH")


def test_read_domain_table_latin1_file_error_says_where_and_how_to_fix(tmp_path):
    path = write_csv(tmp_path, "company_name,website\nCafé Müller,cafe.de\n", encoding="latin-1")

    with pytest.raises(DomainTableError) as caught:
        read_domain_table(path)

    message = str(caught.value)
    assert "companies.csv is not UTF-8" in message
    assert "0xE9" in message and "offset 24" in message and "line 2" in message
    assert "Re-save the file as UTF-8" in message


def test_read_domain_table_reads_parquet_as_text(tmp_path):
    path = tmp_path / "companies.parquet"
    pq.write_table(
        pa.table(
            {
                "Website": ["acme.com", None, "beta.io"],
                "Company": ["Acme", "Nulls Inc", "Beta"],
                "tracking_id": ["007", "008", None],
                "employees": pa.array([12, None, 3], pa.int64()),
            }
        ),
        path,
    )

    table = read_domain_table(path)

    assert table["tracking_id"].iloc[:2].tolist() == ["007", "008"]
    assert table["reason"].tolist() == [None, EMPTY, None]
    assert table["website"].tolist() == ["acme.com", "", "beta.io"]
    assert table["source_file"].tolist() == ["companies.parquet"] * 3


def test_read_domain_table_bad_parquet_file_is_a_table_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")

    with pytest.raises(DomainTableError, match="broken.parquet cannot be read as Parquet"):
        read_domain_table(path)


@pytest.mark.parametrize(
    ("header", "canonical"),
    [
        pytest.param("Website", "domain", id="website"),
        pytest.param(" URL ", "domain", id="url-padded"),
        pytest.param("Company Website", "domain", id="company-website"),
        pytest.param("HOMEPAGE", "domain", id="homepage"),
        pytest.param("Company Name", "company_name", id="company-name-spaced"),
        pytest.param("Organization", "company_name", id="organization"),
        pytest.param("account_name", "company_name", id="account-name"),
        pytest.param("Region", "state", id="region"),
        pytest.param("Province", "state", id="province"),
        pytest.param("State/Province", "state", id="state-province"),
        pytest.param("Country", "country", id="country"),
        pytest.param("Tracking ID", "tracking_id", id="tracking-id-spaced"),
    ],
)
def test_read_domain_table_finds_columns_by_common_names(tmp_path, header, canonical):
    columns = {"domain": "site", "company_name": "name", "state": "st", "country": "c"}
    columns["tracking_id"] = "ref"
    columns[canonical] = header
    values = {"domain": "acme.com", "company_name": "Acme", "state": "CA", "country": "US"}
    values["tracking_id"] = "T-1"
    keys = list(columns)
    text = ",".join(columns[k] for k in keys) + "\n" + ",".join(values[k] for k in keys) + "\n"
    path = write_csv(tmp_path, text)

    table = read_domain_table(path)

    assert table.iloc[0][canonical] == values[canonical]


def test_read_domain_table_column_map_wins_over_guessing(tmp_path):
    path = write_csv(tmp_path, "website,Web Address,Account,name\nold.com,new.com,New Co,Old Co\n")

    column_map = {"domain": "web address", "company_name": "Account"}

    table = read_domain_table(path, column_map=column_map)

    assert table.iloc[0][["domain", "company_name"]].tolist() == ["new.com", "New Co"]


def test_read_domain_table_column_map_to_missing_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path, "website,name\nacme.com,Acme\n")

    with pytest.raises(DomainTableError, match="'Web Adress'.*'website', 'name'"):
        read_domain_table(path, column_map={"domain": "Web Adress"})


def test_read_domain_table_column_map_with_unknown_name_lists_the_valid_ones(tmp_path):
    path = write_csv(tmp_path, "website,name\nacme.com,Acme\n")

    with pytest.raises(DomainTableError, match="'site'.*domain, company_name"):
        read_domain_table(path, column_map={"site": "website"})


def test_read_domain_table_without_domain_column_explains_how_to_map_one(tmp_path):
    path = write_csv(tmp_path, "Account,Link\nAcme,acme.com\n")

    with pytest.raises(DomainTableError) as caught:
        read_domain_table(path)

    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "companies.csv has no website column" in message
    assert "'Account', 'Link'" in message
    assert "column_map={'domain': '<your column>'}" in message
    assert f"{COLUMN_MAP_ENV_VAR}='domain=Account'" in message


def test_parse_column_map_reads_the_environment_form():
    assert parse_column_map(" domain = Web Address , company_name=Account,") == {
        "domain": "Web Address",
        "company_name": "Account",
    }


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("domain", id="no-equals"),
        pytest.param("domain=", id="empty-column"),
        pytest.param("site=Web", id="unknown-canonical"),
    ],
)
def test_parse_column_map_rejects_malformed_text(text):
    with pytest.raises(DomainTableError):
        parse_column_map(text)


def test_read_domain_table_keeps_tracking_ids_and_values_as_text(tmp_path):
    path = write_csv(tmp_path, "tracking_id,company_name,website,state\n007,NA,acme.com,NA\n")

    row = read_domain_table(path).iloc[0]

    assert row["tracking_id"] == "007"
    assert row["company_name"] == "NA"
    assert row["state"] == "NA"


def test_read_domain_table_generates_ids_for_empty_tracking_id_cells(tmp_path):
    path = write_csv(
        tmp_path, "tracking_id,company_name,website\nA-1,Acme,acme.com\n,Beta,beta.io\n"
    )

    ids = read_domain_table(path)["tracking_id"].tolist()

    assert ids[0] == "A-1"
    assert len(ids[1]) == 16 and ids[1] != "A-1"


def test_read_domain_table_tracking_ids_survive_inserted_and_reordered_rows(tmp_path):
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    before = write_csv(tmp_path / "before", "company_name,website\nAcme,acme.com\nBeta,beta.io\n")
    after = write_csv(
        tmp_path / "after",
        "company_name,website\nGamma,gamma.org\nBeta,beta.io\nNew,new.com\nAcme,acme.com\n",
    )

    ids_before = read_domain_table(before).set_index("company_name")["tracking_id"]
    ids_after = read_domain_table(after).set_index("company_name")["tracking_id"]

    assert ids_after["Acme"] == ids_before["Acme"]
    assert ids_after["Beta"] == ids_before["Beta"]
    assert ids_after["Acme"] != ids_after["Beta"]


def test_read_domain_table_numbers_identical_rows_in_order(tmp_path):
    path = write_csv(
        tmp_path,
        "company_name,website\nAcme,acme.com\nBeta,beta.io\nAcme,acme.com\nAcme,acme.com\n",
    )

    table = read_domain_table(path)

    first, _, second, third = table["tracking_id"].tolist()
    assert (second, third) == (f"{first}-2", f"{first}-3")
    assert table["reason"].isna().all()


def test_read_domain_table_rejects_later_rows_with_a_repeated_tracking_id(tmp_path):
    path = write_csv(
        tmp_path,
        "tracking_id,company_name,website\nX,Acme,acme.com\nX,Beta,beta.io\nY,Gamma,g.org\n",
    )

    table = read_domain_table(path)

    assert table["reason"].tolist() == [None, DUPLICATE_TRACKING_ID, None]
    assert table["message"].iloc[1].startswith("Row 2, column 'tracking_id': tracking ID 'X'")
    assert "already used by row 1" in table["message"].iloc[1]


def test_read_domain_table_rejects_a_bad_website_naming_row_and_column(tmp_path):
    path = write_csv(tmp_path, "Company,URL\nAcme,acme.com\nLocal,http://localhost:8000\n")

    table = read_domain_table(path)

    assert table["reason"].tolist() == [None, "localhost"]
    assert table["message"].iloc[1].startswith("Row 2, column 'URL': 'http://localhost:8000'")


def test_read_domain_table_flags_hosted_sites_keeping_the_host_domain(tmp_path):
    path = write_csv(tmp_path, "company_name,website\nVoxy,https://jobs.lever.co/voxy\n")

    row = read_domain_table(path).iloc[0]

    assert (row["domain"], row["reason"]) == ("lever.co", HOSTED_SITE)
    assert "company's own website" in row["message"]


def test_read_domain_table_passes_the_hosted_list_through(tmp_path):
    path = write_csv(tmp_path, "company_name,website\nVoxy,https://jobs.lever.co/voxy\n")

    row = read_domain_table(path, hosted_domains=frozenset()).iloc[0]

    assert (row["domain"], row["reason"]) == ("lever.co", None)


def test_read_domain_table_rejects_an_empty_company_name_with_the_fix(tmp_path):
    path = write_csv(tmp_path, "company_name,website\n  ,acme-tools.com\n")

    row = read_domain_table(path).iloc[0]

    assert (row["company_name"], row["reason"]) == (None, MISSING_COMPANY_NAME)
    assert row["message"].startswith("Row 1, column 'company_name': the company name is empty")
    assert "company_name_from_domain" in row["message"]


def test_read_domain_table_without_name_column_rejects_each_row(tmp_path):
    path = write_csv(tmp_path, "website\nacme.com\nbeta.io\n")

    table = read_domain_table(path)

    assert table["reason"].tolist() == [MISSING_COMPANY_NAME] * 2
    assert table["domain"].tolist() == ["acme.com", "beta.io"]
    assert "has no company-name column" in table["message"].iloc[1]


def test_read_domain_table_derives_missing_names_from_the_domain_when_asked(tmp_path):
    path = write_csv(tmp_path, "company_name,website\n,https://www.acme-tools.com/\nZeta,z.io\n")

    table = read_domain_table(path, company_name_from_domain=True)

    assert table["company_name"].tolist() == ["Acme Tools", "Zeta"]
    assert table["reason"].isna().all()


def test_read_domain_table_website_reason_wins_over_missing_name(tmp_path):
    path = write_csv(tmp_path, "company_name,website,country\n,,DE\n")

    row = read_domain_table(path, company_name_from_domain=True).iloc[0]

    assert (row["reason"], row["company_name"]) == (EMPTY, None)


def test_read_domain_table_skips_blank_rows_and_pads_short_rows(tmp_path):
    text = "company_name,website,country\n\nAcme,acme.com\n,,\nBeta,b!.io,DE\n"
    path = write_csv(tmp_path, text)

    table = read_domain_table(path)

    assert table["row_number"].tolist() == [1, 2]
    assert table["country"].tolist() == [None, "DE"]
    assert table["reason"].tolist() == [None, INVALID_LABEL]


def test_read_domain_table_row_with_extra_values_is_an_error_naming_the_line(tmp_path):
    path = write_csv(tmp_path, "company_name,website\nAcme,acme.com\nAcme, Inc.,acme.com\n")

    with pytest.raises(DomainTableError, match="line 3: the row has 3 fields but the header has"):
        read_domain_table(path)


def test_read_domain_table_unclosed_quote_is_an_error_naming_the_line(tmp_path):
    path = write_csv(tmp_path, 'company_name,website\n"Acme,acme.com\nBeta,beta.io\n')

    with pytest.raises(DomainTableError, match="line 3: .*Check the quotes"):
        read_domain_table(path)


def test_read_domain_table_empty_file_is_an_error(tmp_path):
    path = write_csv(tmp_path, "\n")

    with pytest.raises(DomainTableError, match="companies.csv is empty"):
        read_domain_table(path)


def test_read_domain_table_header_only_gives_an_empty_table(tmp_path):
    path = write_csv(tmp_path, "company_name,website\n")

    table = read_domain_table(path)

    assert table.empty and tuple(table.columns) == LOOKUP_COLUMNS
