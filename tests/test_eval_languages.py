"""Language tags through langcodes: names, base languages and scripts for every FLORES-200 code."""

from __future__ import annotations

import pytest

from midalign.errors import DataError
from midalign.evaluation.languages import base_language, language_name, script
from midalign.evaluation.translation import bleu_tokenizer

# The FLORES-200 codes (language_Script), as the data set names its files.
_FLORES_200 = """
    ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn amh_Ethi apc_Arab arb_Arab arb_Latn
    ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn ban_Latn
    bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl cat_Latn ceb_Latn
    ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek eng_Latn
    epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn gaz_Latn
    gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn hun_Latn
    hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn kan_Knda
    kas_Arab kas_Deva kat_Geor kaz_Cyrl kbp_Latn kea_Latn khk_Cyrl khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn
    kmr_Latn knc_Arab knc_Latn kon_Latn kor_Hang lao_Laoo lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn
    ltz_Latn lua_Latn lug_Latn luo_Latn lus_Latn lvs_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Arab min_Latn
    mkd_Cyrl mlt_Latn mni_Beng mos_Latn mri_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nso_Latn nus_Latn
    nya_Latn oci_Latn ory_Orya pag_Latn pan_Guru pap_Latn pbt_Arab pes_Arab plt_Latn pol_Latn por_Latn prs_Arab
    quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Olck scn_Latn shn_Mymr sin_Sinh slk_Latn slv_Latn
    smo_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn swh_Latn
    szl_Latn tam_Taml taq_Latn taq_Tfng tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi tpi_Latn tsn_Latn
    tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab uzn_Latn vec_Latn
    vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans zho_Hant zsm_Latn zul_Latn
"""
FLORES_200 = _FLORES_200.split()


def test_every_flores_200_code_has_a_name_a_base_language_and_its_own_script():
    assert len(FLORES_200) > 200
    for code in FLORES_200:
        assert language_name(code) and not language_name(code).startswith("Unknown"), code
        assert base_language(code).isalpha(), code
        assert script(code) == code.split("_")[1], code


@pytest.mark.parametrize(
    ("tag", "base", "name"),
    [
        ("quy_Latn", "quy", "Ayacucho Quechua"),  # these four had no entry in the hand table this replaced
        ("tir_Ethi", "ti", "Tigrinya"),
        ("ibo_Latn", "ig", "Igbo"),
        ("yue_Hant", "yue", "Cantonese"),
        ("arb_Arab", "ar", "Arabic"),  # individual languages fold into their macrolanguage
        ("cmn_Hans", "zh", "Chinese"),
        ("pes_Arab", "fa", "Persian"),
        ("de-DE", "de", "German"),
        ("sl-SL", "sl", "Slovenian"),  # MASSIVE's own spelling of Slovenian's locale
        ("en_US", "en", "English"),
    ],
)
def test_base_language_and_english_name(tag, base, name):
    assert base_language(tag) == base
    assert language_name(tag) == name


@pytest.mark.parametrize("tag", ["xa", "xx", "zzz", "zz_Latn", "qqq_Latn", "", "not a tag"])
def test_unknown_codes_fail_with_the_code_in_the_message(tag):
    with pytest.raises(DataError, match=f"unknown language {tag!r}"):
        language_name(tag)
    if tag != "qqq_Latn":  # a private-use code with its script written out: the script is known, the name is not
        assert script(tag) is None


def test_bleu_tokenizer_follows_the_script():
    assert bleu_tokenizer("yue_Hant") == ("zh", None)  # Cantonese is written in Chinese characters too
    assert bleu_tokenizer("zho_Hant") == ("zh", None)
    assert bleu_tokenizer("zh-TW") == ("zh", None)
    for tag in ("lao_Laoo", "khm_Khmr", "mya_Mymr", "bod_Tibt", "dzo_Tibt", "shn_Mymr"):
        assert bleu_tokenizer(tag)[0] == "char", tag
    for tag in ("tir_Ethi", "quy_Latn", "ibo_Latn", "sat_Olck", "xa"):
        assert bleu_tokenizer(tag) == ("13a", None), tag
