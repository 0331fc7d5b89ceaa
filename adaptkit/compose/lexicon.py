"""The closed word lists of the rule-based caption parser (:mod:`adaptkit.compose.parsing`):
determiners, auxiliaries, pronouns, prepositions and the noun classes its rules name."""

DETERMINERS = {"a", "an", "the", "some", "this", "that", "these", "those", "his", "her", "its", "their", "my", "our",
               "your", "another", "each", "every", "any", "no", "all", "both", "there", "several", "many", "few",
               "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "dozens", "multiple",
               "various", "numerous", "other", "much", "most", "more", "less"}
PLURAL_DETERMINERS = {"these", "those", "several", "many", "few", "both", "two", "three", "four", "five", "six",
                      "seven", "eight", "nine", "ten", "dozens", "multiple", "various", "numerous", "some", "lots",
                      "all"}
BE = {"is", "are", "was", "were", "be", "being", "been", "am"}
AUXILIARIES = BE | {"has", "have", "had", "does", "do", "did", "can", "could", "will", "would", "may", "might",
                    "should", "must", "shall", "to", "getting", "gets", "got", "get"}
MAIN_WHEN_FOLLOWED = {"has": "have", "have": "have", "had": "have", "does": "do", "do": "do", "did": "do",
                      "gets": "get", "get": "get", "got": "get", "getting": "get"}
"""Auxiliaries that are the clause's verb when a noun phrase follows ("a sign has a bear on it")."""
VERBAL_AUXILIARIES = BE | {"has", "have", "had", "does", "do", "did", "to", "getting", "gets", "got"}
"""Auxiliaries that are never nouns (unlike "can" or "will")."""
RELATIVES = {"that", "who", "which", "whose", "where"}
PRONOUNS = {"it", "him", "her", "them", "me", "us", "you", "he", "she", "they", "we", "i", "one", "another", "other",
            "others", "each", "someone", "something", "somebody", "everyone", "itself", "themselves", "himself",
            "herself"}
ADVERBS = {"together", "outside", "inside", "outdoors", "indoors", "asleep", "alone", "here", "there", "very",
           "also", "just", "still", "away", "up", "down", "out", "off", "back", "around", "about", "over", "nearby",
           "downstairs", "upstairs", "behind", "ahead", "apart", "now", "then", "almost", "already", "really",
           "upside", "brightly", "peacefully", "closely", "quietly", "happily", "curled"}
PREPOSITIONS = ["in front of", "on top of", "to the left of", "to the right of", "next to", "close to", "far from",
                "inside of", "outside of", "out of", "in to", "on to", "in", "on", "at", "under", "below", "beneath",
                "above", "over", "behind", "beside", "besides", "near", "inside", "outside", "between", "with",
                "without", "by", "onto", "into", "across", "against", "around", "along", "through", "toward", "towards",
                "underneath", "atop", "among", "down", "up", "past", "for", "from", "to", "off", "out", "upon",
                "alongside", "amid", "within", "beyond", "via", "throughout", "about"]
SPATIAL = {p for p in PREPOSITIONS if p not in ("for", "from", "to", "about", "via", "out", "up", "down", "off",
                                                "without", "in to", "on to")}
QUANTITY = {"group", "groups", "herd", "flock", "bunch", "couple", "pair", "lot", "lots", "number", "pack", "crowd",
            "set", "sets", "stack", "pile", "row", "rows", "line", "variety", "assortment", "collection", "kind",
            "kinds", "type", "types", "piece", "pieces", "slice", "slices", "sort", "handful", "dozen", "dozens",
            "cluster", "family", "array", "series", "patch", "plenty", "swarm", "school", "bunches", "team",
            "trio", "duo", "quartet", "batch", "display", "selection", "mound", "heap", "bundle"}
GERUND_COMPOUNDS = {"room", "table", "pool", "lot", "area", "bag", "board", "machine", "station", "stick", "cart",
                    "pot", "pan", "sheet", "suit", "ground", "hall", "ring", "track", "range", "glass", "glasses",
                    "gear", "equipment", "utensil", "counter", "space", "chair", "shoe", "shoes", "pole", "trail",
                    "boat", "bowl", "plate", "line"}
"""Nouns an "-ing" word modifies rather than takes as object: living room, dining table, parking lot."""
ING_NOUNS = {"building", "painting", "clothing", "ceiling", "railing", "wedding", "evening", "morning", "frosting",
             "icing", "bedding", "topping", "toppings", "siding", "crossing", "landing", "lighting", "housing",
             "filling", "opening", "drawing", "carving", "awning", "sibling", "offering", "setting", "buildings",
             "paintings", "drawings", "railings", "ceilings", "pudding", "dumpling", "stuffing", "seasoning"}
"""Words in "-ing" that name things ("a brick building"): nouns unless an object follows them."""
PLURAL_ONLY = {"glasses", "sunglasses", "eyeglasses", "goggles", "binoculars", "scissors", "tongs", "pliers",
               "tweezers", "pants", "trousers", "jeans", "shorts", "leggings", "tights", "pajamas", "pyjamas",
               "overalls", "suspenders", "clothes", "headphones", "earphones", "earbuds", "shears", "clippers"}
"""Nouns used in the plural only: never verbs in a caption ("a man wears glasses")."""
CLOTHING = PLURAL_ONLY | {"shirt", "t-shirt", "jacket", "coat", "dress", "suit", "uniform", "hat", "cap", "helmet",
                          "sweater", "hoodie", "costume", "outfit", "skirt", "vest", "jersey", "apron", "robe", "tie",
                          "boots", "shoes", "wetsuit", "scarf", "blouse", "tuxedo", "gown", "bikini", "swimsuit",
                          "trunks", "gear", "top", "black", "white", "red", "blue", "green", "pink"}
"""What "in" introduces when it describes a person ("a man in a black shirt on a court")."""
POSTNOMINAL = {"full", "open", "shaped", "ready", "alone", "free", "filled", "covered", "missing", "loaded"}
PARTS = {"top", "bottom", "side", "back", "front", "edge", "middle", "center", "centre", "corner", "end", "rest"}
FRAMES = {"picture", "photo", "photograph", "image", "view", "close", "closeup", "shot", "snapshot", "scene"}
IRREGULAR_NOUNS = {"people": "person", "men": "man", "women": "woman", "children": "child", "feet": "foot",
                   "teeth": "tooth", "mice": "mouse", "geese": "goose", "oxen": "ox", "sheep": "sheep",
                   "fish": "fish", "deer": "deer", "cattle": "cattle", "woods": "wood"}
CONNECTIVES = {"while", "as", "whilst", "when", "because"}
POSSESSIVES = {"her", "his", "its", "their", "my", "our", "your", "one", "another", "other", "each"}
CLOSED = DETERMINERS | AUXILIARIES | RELATIVES | PRONOUNS | {"and", "or", "of", "but", "nor", "not", "than", ","} | \
    {p for p in PREPOSITIONS if " " not in p}
