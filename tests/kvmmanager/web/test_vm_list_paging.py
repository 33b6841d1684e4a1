"""The VM list's pages (issue 19): what `?page=` shows, whatever a URL or a stale pager
asks for."""

from __future__ import annotations

from kvmmanager.web.routes.vms import PAGE_SIZE, ListPage, paginate


def test_pages_cover_every_vm_once_in_order() -> None:
    vms = list(range(2 * PAGE_SIZE + 7))
    seen: list[int] = []
    for n in (1, 2, 3):
        rows, page = paginate(vms, str(n))
        assert page.pages == 3 and page.total == len(vms) and page.number == n
        assert (page.first, page.last) == (seen[-1] + 2 if seen else 1, len(seen) + len(rows))
        seen += rows
    assert seen == vms


def test_a_page_past_the_end_or_not_a_number_is_clamped() -> None:
    vms = list(range(PAGE_SIZE + 1))
    assert paginate(vms, "9")[1] == ListPage(2, 2, PAGE_SIZE + 1, PAGE_SIZE + 1, PAGE_SIZE + 1)
    assert paginate(vms, "0")[1].number == 1
    assert paginate(vms, "-3")[1].number == 1
    assert paginate(vms, "two")[1].number == 1
    assert paginate(vms, None)[0] == vms[:PAGE_SIZE]


def test_no_vms_is_one_empty_page() -> None:
    assert paginate([], "1") == ([], ListPage(1, 1, 0, 0, 0))
