"""Word lists the intent parser reads: units, currencies, intent phrases, filler words.

Everything is written without accents and in lower case: the parser folds the message the
same way before it matches (``fold``), so "dúzia", "duzia" and "DÚZIA" are one word. Keeping
the tables here, apart from the matching code in :mod:`mycelium.gateway.intent`, lets a
community add a word (a local unit, a slang verb) without touching the parser.
"""

from __future__ import annotations

import unicodedata

LANGS = ("en", "es", "pt")


def _words(text: str) -> frozenset[str]:
    """A set of words written as one whitespace-separated string (easier to read and edit)."""
    return frozenset(text.split())


def fold(text: str) -> str:
    """Lower-case ``text`` and strip accents ("Dúzia" -> "duzia"), keeping its length."""
    decomposed = unicodedata.normalize("NFD", text.casefold())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


#: Canonical unit -> spellings (singular, plural, abbreviations, common misspellings).
#: Canonical names are what ``Parsed.unit`` holds; pint is used only to convert between them.
UNITS: dict[str, tuple[str, ...]] = {
    "kg": ("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms", "kilogramme", "kilogrammes",
           "kilogramo", "kilogramos", "quilo", "quilos", "quilograma", "quilogramas",
           "kilograma", "kilogramas", "kl", "klo", "kilso", "kiilo", "kilo's"),
    "g": ("g", "gr", "grs", "gram", "grams", "gramme", "grammes", "gramo", "gramos",
          "grama", "gramas"),
    "lb": ("lb", "lbs", "pound", "pounds", "libra", "libras"),
    "l": ("l", "lt", "lts", "liter", "liters", "litre", "litres", "litro", "litros"),
    "ml": ("ml", "mls", "milliliter", "milliliters", "millilitre", "millilitres",
           "mililitro", "mililitros"),
    "dozen": ("dozen", "dozens", "doz", "docena", "docenas", "duzia", "duzias"),
    "bunch": ("bunch", "bunches", "manojo", "manojos", "maco", "macos", "molho", "molhos",
              "ramo", "ramos", "atado", "atados"),
    "jar": ("jar", "jars", "frasco", "frascos", "pote", "potes", "tarro", "tarros", "vidro",
            "vidros"),
    "unit": ("unit", "units", "piece", "pieces", "pcs", "pc", "unidad", "unidades",
             "unidade", "pieza", "piezas", "peca", "pecas", "loaf", "loaves", "head", "heads",
             "cabeza", "cabezas", "pe", "pes"),
}

#: Spelling -> canonical unit, built once from :data:`UNITS`.
UNIT_ALIASES: dict[str, str] = {
    alias: canonical for canonical, aliases in UNITS.items() for alias in aliases
}

#: Currency words and symbols -> ISO 4217 code. Symbols are matched before words; "$" alone
#: is resolved by language in :data:`DOLLAR_SIGN` since "$" means pesos in much of Latin
#: America.
CURRENCY_SYMBOLS: dict[str, str] = {
    "r$": "BRL", "us$": "USD", "u$s": "USD", "€": "EUR", "£": "GBP", "$": "$",
}
CURRENCY_WORDS: dict[str, str] = {
    "euro": "EUR", "euros": "EUR", "eur": "EUR",
    "dollar": "USD", "dollars": "USD", "dolar": "USD", "dolares": "USD", "bucks": "USD",
    "usd": "USD",
    "real": "BRL", "reais": "BRL", "reales": "BRL", "brl": "BRL", "pila": "BRL", "pilas": "BRL",
    "peso": "MXN", "pesos": "MXN", "mxn": "MXN", "ars": "ARS", "cop": "COP", "clp": "CLP",
    "gbp": "GBP",
}
#: What a bare "$" means when the message's language is known.
DOLLAR_SIGN = {"en": "USD", "es": "MXN", "pt": "BRL"}

#: Words that mean "half" before a unit ("half a kilo", "medio kilo", "meio quilo").
HALF_WORDS = ("half", "medio", "media", "meio", "meia")
#: Phrases that add a half after a number ("2 and a half", "dos y medio", "dois e meio").
AND_A_HALF = ("and a half", "and half", "y medio", "y media", "e meio", "e meia")
#: Articles that mean "one" before a unit ("a kilo", "un frasco", "uma duzia").
ONE_WORDS = ("a", "an", "one", "un", "una", "uno", "um", "uma")

#: Intent phrases per intent, across languages, folded. Matched as whole words; the first
#: intent (in :data:`INTENT_ORDER`) with a matching phrase wins, so "sold out" beats "sold"
#: and "ya no tengo" beats "tengo".
INTENT_PHRASES: dict[str, tuple[str, ...]] = {
    "link": ("link my account", "link account", "link", "vincular", "vincular cuenta",
             "vincular conta", "conectar cuenta", "conectar conta"),
    "help": ("help", "help me", "how does this work", "how do i", "what can i do", "menu",
             "ayuda", "ayudame", "como funciona", "que puedo hacer", "ajuda", "me ajuda",
             "socorro", "o que posso fazer", "info", "instructions", "instrucciones",
             "instrucoes"),
    "cancel": ("sold out", "sold out of", "no longer have", "dont have any more",
               "don't have any more", "do not have any more", "no more", "all gone",
               "all sold", "already sold", "cancel", "remove my listing", "withdraw",
               "out of stock", "ran out of", "i ran out",
               "ya no tengo", "ya no hay", "no tengo mas", "se acabo", "se acabaron",
               "agotado", "agotados", "agotada", "agotadas", "vendido", "vendidos",
               "vendida", "vendidas", "ya vendi", "cancelar", "quitar", "retirar",
               "nao tenho mais", "ja nao tenho", "acabou", "acabaram", "esgotado",
               "esgotados", "esgotada", "esgotadas", "ja vendi", "cancela"),
    "search": ("who has", "who's got", "whos got", "who sells", "who is selling",
               "anyone have", "anyone has", "anybody have", "anybody has", "does anyone have",
               "does anybody have", "anyone selling", "do you sell", "does anyone sell",
               "anybody selling", "is there any",
               "are there any", "where can i find", "where can i buy", "where can i get",
               "do you have", "do you guys have", "have you got", "got any",
               "quien tiene", "quien vende", "alguien tiene", "alguien vende",
               "hay alguien", "donde consigo", "donde puedo comprar", "donde encuentro",
               "alguien que venda", "busco alguien que venda", "busco a alguien que venda",
               "procuro alguem que venda", "quem tem", "quem vende", "alguem tem", "alguem vende",
               "onde encontro", "onde posso comprar", "onde compro", "tem alguem",
               "alguem que venda", "voce tem", "vc tem", "voces tem"),
    "request": ("i need", "i am looking for", "i'm looking for", "im looking for",
                "looking for", "i want", "i would like", "i'd like", "id like", "want to buy",
                "i want to buy", "i'd like to buy", "i would like to buy", "need to buy",
                "quiero comprar", "me gustaria comprar", "quisiera comprar", "necesito comprar",
                "quero comprar", "gostaria de comprar", "queria comprar", "preciso comprar",
                "wanted", "i'm after", "in need of", "need", "necesito", "busco", "estoy buscando",
                "quiero", "quisiera", "me gustaria", "me hace falta", "me falta",
                "preciso", "procuro", "estou procurando", "to procurando", "quero", "queria",
                "gostaria", "necessito"),
    "offer": ("i have", "i hav", "i hve", "ihave", "i habe", "i've got", "ive got", "i got",
              "got", "tngo", "tego", "tenho", "tenhu", "teno", "i've", "ive", "have", "selling",
              "i sell", "for sale", "i'm selling", "im selling", "i am selling", "offering",
              "i offer", "giving away", "free", "available", "sell", "surplus", "extra",
              "tengo", "vendo", "ofrezco", "regalo", "doy", "tenemos", "disponible",
              "disponibles", "se vende", "se venden", "en venta", "sobran", "me sobran",
              "tenho", "temos", "ofereco", "vende se", "vendem se", "a venda", "disponivel",
              "disponiveis", "sobrou", "sobraram", "dou", "doacao"),
}
#: Offers phrased with a wish ("I want to sell") must not read as requests.
OFFER_WISHES = ("want to sell", "would like to sell", "i'd like to sell", "id like to sell",
                "quiero vender", "quisiera vender", "me gustaria vender", "quero vender",
                "queria vender", "gostaria de vender")
#: Cues that mean "search" only in a question ("any honey?", "¿hay miel?", "tem mel?").
QUESTION_SEARCH = ("any", "anyone", "anybody", "hay", "tienen", "tienes", "tiene", "tem",
                   "have", "got")
#: Order in which intents are tried: the first with a matching phrase wins.
INTENT_ORDER = ("link", "help", "cancel", "offer_wish", "search", "request", "offer")

#: Words that tell the language apart (folded). Intent phrases count too.
LANG_MARKERS: dict[str, frozenset[str]] = {
    "en": _words("""i have the of and an some who has need want looking for sell selling
        sold out any anyone please thanks is are my with each per fresh organic eggs honey
        tomatoes help do does where can"""),
    "es": _words("""tengo tenemos del la el los las y un una unos unas quien
        alguien necesito busco quiero gracias hay ya no mas con huevos miel ayuda donde puedo
        agotado agotados se docena docenas manojo manojos tarro frasco kilos albahaca manzanas
        naranjas papas lechuga queso pan manzanilla hierbabuena limones calabaza pesos tiene
        tienen quisiera estoy buscando hola buenas gusta nadie de ofrezco regalo gramos
        unidad unidades pieza piezas tarros tarro frascos litros leche aceite disponible mis
        cancelar buenos noches vincular mermelada cerezas naranjas oregano cafe
        lechugas calabazas sobran tomates"""),
    "pt": _words("""tenho temos do da dos das e um uma uns umas quem alguem preciso
        procuro quero obrigado obrigada tem ja nao mais com ovos mel ajuda onde posso
        esgotado esgotados acabou acabaram voce voces vc duzia duzias maco macos pote potes
        quilo quilos manjericao macas laranjas batatas alface queijo pao camomila limoes
        abobora reais estou procurando oi ola tudo bem gostaria queria hortela de ofereco
        gramas unidade unidades peca pecas litros leite azeite disponivel meus minhas
        cancela bom boa noite vincular geleia cerejas sobraram vende caipiras queijo"""),
}

#: Words dropped when the item is cut out of a message: articles, fillers, politeness.
FILLER_WORDS = _words("""
    a an the of some any please pls plz thanks thank you thx hi hello hey ok okay
    for sale today now just also very i me my we our have has
    de del la el los las lo un una unos unas algo algun alguna algunos algunas por favor
    gracias hola buenas buenos dias tardes hoy ahora tambien muy yo mi mis nos
    do da dos das o os as um uma uns umas oi ola obrigado obrigada bom dia boa tarde hoje
    agora tambem muito eu meu minha meus minhas
    each per cada and y e or o ou
    everyone everybody all todos todas todo mundo is are was were esta estan ya ja estao
    good morning evening afternoon night noches noite dias
    neighbours neighbors neighbour neighbor friends folks guys people vecinos vecinas amigos
    amigas gente pessoal vizinhos vizinhas galera
""")

#: Words after a bare number that make it a price ("3.50 each", "2 cada", "5 c/u").
EACH_WORDS = _words("each apiece ea cada c u")

#: A message that starts with one of these asks something other than "who has X?".
QUESTION_WORDS = _words("""
    what when why how which que cuando como cual porque quando qual por
""")

#: Words that end the item phrase: what follows is a place, a time or a price cue.
ITEM_STOP_WORDS = _words("""
    at in near for from to until by with each per if
    en cerca para desde hasta con si cada a por
    em perto para ate com se cada
""")
