"""Table-driven redaction corpus: how callers, agents and the recogniser say sensitive things.

Each case is a short stretch of one call. Every utterance is written with the parts that must be
masked between [[ and ]]; the engine's output for *every* utterance of the case (earlier turns
too) must equal the text with the letters and digits inside the markers turned into '#'.
Turns start with "A:" (agent) or "C:" (customer); the last turn is the case's subject.

`entity` names what the case is about (NONE: a near miss that must stay); the bench uses it for
per-entity recall. `policy` names one of POLICIES.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from callscribe.redact import RedactionPolicy

_DEFAULT = RedactionPolicy.asapp_default()
POLICIES: dict[str, RedactionPolicy] = {
    "default": _DEFAULT,
    "nodigits": replace(_DEFAULT, entities=_DEFAULT.entities - {"DIGITS"}),
    "email": replace(_DEFAULT, entities=_DEFAULT.entities | {"EMAIL"}),
    "dob": replace(_DEFAULT, entities=_DEFAULT.entities | {"DOB"}),
    "all": RedactionPolicy.all_entities(),
    "cards": RedactionPolicy(frozenset({"CREDIT_CARD_NUMBER"})),
}

_MARK = re.compile(r"\[\[(.*?)\]\]")


@dataclass(frozen=True)
class Turn:
    role: str
    marked: str

    @property
    def text(self) -> str:
        return _MARK.sub(lambda m: m.group(1), self.marked)

    @property
    def expected(self) -> str:
        return _MARK.sub(lambda m: "".join("#" if ch.isalnum() else ch for ch in m.group(1)), self.marked)


@dataclass(frozen=True)
class Case:
    id: str
    entity: str
    turns: tuple[Turn, ...]
    policy: str = "default"


CASES: list[Case] = []


def c(entity: str, *turns: str, policy: str = "default", id: str = "") -> None:
    parsed = []
    for t in turns:
        role, _, body = t.partition(":") if t[:2] in ("A:", "C:") else ("C", "", t)
        parsed.append(Turn("agent" if role == "A" else "customer", body.strip()))
    n = sum(1 for x in CASES if x.entity == entity) + 1
    CASES.append(Case(id or f"{entity.lower()}-{policy}-{n}", entity, tuple(parsed), policy))


CARD = "CREDIT_CARD_NUMBER"
N = "NONE"

# ---- card numbers: written, Whisper's forms, spoken, miscounted, split --------------------------
c(CARD, "My card number is [[4111 1111 1111 1111]].")
c(CARD, "Yes, it is [[41, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]].")  # miscounted: 15 digits, Luhn fails
c(CARD, "It's [[4-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1]].")
c(CARD, "[[four one one one, one one one one, one one one one, one one one one]]")
c(CARD, "Sure, [[4111111111111111]].")
c(CARD, "It's a Visa, [[4012 8888 8888 1881]].")
c(CARD, "Amex, [[3782 822463 10005]].")
c(CARD, "It's [[three seven eight two, eight two two four six three, one double oh oh five]].")
c(CARD, "[[6011 0009 9013 9424]]")
c(CARD, "The number is [[4111.1111.1111.1111]].")
c(CARD, "[[forty one eleven, eleven eleven, eleven eleven, eleven eleven]]")
c(CARD, "Okay so it's [[4111 1111 1111 111]].")
c(CARD, "The number on the card is [[4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1]].")
c(CARD, "Uh, [[5105 1051 0510 5100]] and that's it.")
c(CARD, "[[4111 uh 1111 um 1111 1111]]")
c(CARD, "[[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]")  # decoder loop
c(CARD, "Card number [[five five five five, five five five five, four four four four, four four four four]].")
c(CARD, "[[four one one one dash one one one one dash one one one one dash one one one one]]")
c(CARD, "It is [[double four, one one, double one one one, one one one one, one one one one]].")
c(CARD, "Mastercard [[5555-5555-5555-4444]], exp soon.")
c(CARD, "It's [[4 1 1 1, 1 1 1 1, 1 1 1 1, 1 1 1 1]], did you get that?")
c(CARD, "My debit card is [[four zero one two, eight eight eight eight, eight eight eight eight, one eight eight one]].")
c(CARD, "[[3530 1113 3330 0000]] is the number on my card.")
c(CARD, "The card ending in [[1234]].")
c(CARD, "The last digits of the card are [[4 4 3 2]].")
c(CARD, "A:Can I have the card number please?", "C:Sure, it's [[4111 1111]]", "C:[[1111 1111]]")
c(CARD, "C:[[4111 1111 1111]]", "C:[[1111]]")
c(CARD, "C:It's [[5555 5555]]", "A:Mm-hm.", "C:[[5555 4444]]")
c(CARD, "A:And the long number on the front?", "C:[[4111]]", "C:[[1111]]", "C:[[1111]]", "C:[[1111]]")
c(CARD, "C:Okay it's [[four one one one one one one one]]", "C:[[one one one one one one one one]]")
c(CARD, "My card number is [[4111 1111 1111 1111]].", policy="nodigits")
c(CARD, "C:It's [[5555 5555]]", "A:Mm-hm.", "C:[[5555 4444]]", policy="nodigits")
c(CARD, "A:What's the card number?", "C:[[4111 1111]]", "C:[[1111 1111]]", policy="nodigits")
c(CARD, "C:[[4111 1111 1111]]", "C:[[1111]]", policy="nodigits")
c(CARD, "[[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]", policy="cards")
c(CARD, "It's [[4111 1111 1111 1111]], expiry [[04/27]].", policy="nodigits")
c(CARD, "Yes it's [[five one oh five, one oh five one, oh five one oh, five one oh oh]].")
c(CARD, "A:Go ahead with the card number.", "C:[[4111 1111 1111]], hold on, [[1111]].")

# ---- CVV --------------------------------------------------------------------------------------
c("CVV", "A:What's the security code on the back?", "C:[[3 7 1]]")
c("CVV", "The CVV is [[371]].")
c("CVV", "CVV [[three seven one]].")
c("CVV", "A:And the three digits on the back?", "C:It's [[7 3 7]].")
c("CVV", "The security code is [[4321]].")
c("CVV", "A:Security code please.", "C:[[371]]", policy="nodigits")
c("CVV", "The code on the back is [[two four six]].", policy="nodigits")
c("CVV", "[[3, 7, 1]] is the security code.", policy="nodigits")
c("CVV", "And the code is [[3, 7, 1]].")
c("CVV", "The CVC is [[oh four two]].", policy="nodigits")
c("CVV", "A:What's the security code?", "C:Hold on.", "C:Okay it's [[five five nine]].", policy="nodigits")
c("CVV", "A:Could you read me the CVV?", "C:Sure, it is [[9 9 7]].", policy="nodigits")
c("CVV", "A:The expiration date and the security code?", "C:[[Oh four twenty seven]] and [[three seven one]].",
  policy="nodigits")
c("CVV", "The three digit code is [[8 1 2]].", policy="nodigits")

# ---- expiry -----------------------------------------------------------------------------------
c("CARD_EXPIRY", "Expiry [[oh four twenty seven]].")
c("CARD_EXPIRY", "The expiration date is [[04/27]].")
c("CARD_EXPIRY", "It expires [[April 2027]].")
c("CARD_EXPIRY", "Expiration [[April twenty seven]].", policy="nodigits")
c("CARD_EXPIRY", "A:And the expiry date?", "C:[[Oh four, twenty seven]].")
c("CARD_EXPIRY", "It's good through [[12/26]].", policy="nodigits")
c("CARD_EXPIRY", "Exp date is [[0 4 2 7]].", policy="nodigits")
c("CARD_EXPIRY", "The card expires [[four twenty seven]].", policy="nodigits")
c("CARD_EXPIRY", "It expires in [[2027]].", policy="nodigits")
c("CARD_EXPIRY", "Valid thru [[May twenty eight]].", policy="nodigits")
c("CARD_EXPIRY", "The expiry is [[0427]].", policy="nodigits")
c("CARD_EXPIRY", "A:When does it expire?", "C:[[November, twenty thirty]].", policy="nodigits")
c("CARD_EXPIRY", "The primary date is [[0, 4, 27]], and the expiry is [[0, 4, 27]].")
c("CARD_EXPIRY", "A:What's the expiration?", "C:[[Oh nine slash twenty six]].", policy="nodigits")

# ---- SSN --------------------------------------------------------------------------------------
c("SSN", "My social is [[123-45-6789]].")
c("SSN", "Social security number [[one two three, four five, six seven eight nine]].")
c("SSN", "It's [[123 45 6789]].", policy="nodigits")
c("SSN", "[[123456789]]", policy="nodigits")
c("SSN", "A:Can I get the last four of your social?", "C:[[6789]].", policy="nodigits")
c("SSN", "It's [[987-65-4321]].", policy="nodigits")
c("SSN", "SSN [[5 5 5 1 2 3 4 5 6]].")
c("SSN", "My social is [[123-45-678]].", policy="nodigits")  # miscounted
c("SSN", "[[1, 2, 3, 4, 5, 6, 7, 8, 9]]", policy="nodigits")
c("SSN", "A:What's your social security number?", "C:[[Two one nine, oh nine, nine nine nine nine]].",
  policy="nodigits")
c("SSN", "My social security number is [[078-05-1120]], okay?")

# ---- PIN --------------------------------------------------------------------------------------
c("PIN", "My PIN is [[4 4 2 1]].")
c("PIN", "The pin number is [[two two five nine]].", policy="nodigits")
c("PIN", "Pin [[1234]].", policy="nodigits")
c("PIN", "A:Please say your PIN.", "C:[[9 8 7 6]].", policy="nodigits")
c("PIN", "The verification code is [[5 8 2 9 1 7]].", policy="nodigits")
c("PIN", "My passcode is [[2580]].", policy="nodigits")
c("PIN", "The one time code is [[8 3 1 2 0 4]].", policy="nodigits")
c("PIN", "PIN is [[double five, double seven]].", policy="nodigits")
c("PIN", "A:What's the access code on the account?", "C:It's [[six six one four two]].", policy="nodigits")

# ---- passwords --------------------------------------------------------------------------------
c("PASSWORD", "My password is [[Sunshine123]].")
c("PASSWORD", "My password is [[hunter2]], and my username is bob.")
c("PASSWORD", "A:Can you verify your password for me?", "C:Sure, it's [[blue monkey 77]].")
c("PASSWORD", "The password is [[capital T, i, g, e, r, 9, 9]].")
c("PASSWORD", "Password: [[Tr0ub4dor]].", policy="nodigits")
c("PASSWORD", "C:My password is", "C:[[letmein2024]]")
c("PASSWORD", "A:What is the password on the account?", "C:Um, [[purple elephant]].")
c("PASSWORD", "My password's [[correct horse battery staple]].")
c("PASSWORD", "The pass phrase is [[open sesame]] and that's it.")

# ---- emails -----------------------------------------------------------------------------------
c("EMAIL", "My email is [[john.smith@gmail.com]].", policy="email")
c("EMAIL", "It's [[john dot smith at gmail dot com]].", policy="email")
c("EMAIL", "[[j o h n at yahoo dot com]]", policy="email")
c("EMAIL", "Email is [[mary_jones42 at outlook.com]].", policy="email")
c("EMAIL", "Send it to [[sarah.connor@sky.net]] please.", policy="email")
c("EMAIL", "It's [[support at acme dot co dot uk]].", policy="email")
c("EMAIL", "[[bob underscore lee at hotmail dot com]]", policy="email")
c("EMAIL", "Yeah it's [[jsmith at company dot org]].", policy="all")

# ---- phone numbers ----------------------------------------------------------------------------
c("PHONE_NUMBER", "Call me at [[555-867-5309]].")
c("PHONE_NUMBER", "My number is ([[555) 867-5309]].", policy="nodigits")
c("PHONE_NUMBER", "You can call me at [[5, 5, 5, 8, 6, 7, 5, 3, 0, 9]].")
c("PHONE_NUMBER", "[[five five five, eight six seven, five three oh nine]]", policy="nodigits")
c("PHONE_NUMBER", "It's [[555.867.5309]].", policy="nodigits")
c("PHONE_NUMBER", "You can reach me at [[5.5.5867.5309]].", policy="nodigits")
c("PHONE_NUMBER", "+[[1 555 867 5309]]", policy="nodigits")
c("PHONE_NUMBER", "[[1-800-555-0199]]", policy="nodigits")
c("PHONE_NUMBER", "My cell is [[415 555 2671]].", policy="nodigits")
c("PHONE_NUMBER", "Area code [[four one five]], then [[five five five, two six seven one]].", policy="nodigits")
c("PHONE_NUMBER", "A:What's the best callback number?", "C:[[6 1 7, 5 5 5, 0 1 2 3]].", policy="nodigits")
c("PHONE_NUMBER", "It's [[867-5309]].", policy="nodigits")
c("PHONE_NUMBER", "A:And a phone number?", "C:[[Two oh six]]", "C:[[five five five, one two one two]]",
  policy="nodigits")

# ---- dates of birth ----------------------------------------------------------------------------
c("DOB", "My date of birth is [[March 3rd, 1985]].", policy="dob")
c("DOB", "I was born on the [[15th of July, 1990]].", policy="dob")
c("DOB", "Date of birth [[oh three fifteen eighty five]].", policy="dob")
c("DOB", "DOB is [[03/15/1985]].", policy="dob")
c("DOB", "I was born in [[1985]].", policy="dob")
c("DOB", "My birthday is [[December twenty first, nineteen ninety]].", policy="dob")
c("DOB", "A:Can you confirm your date of birth?", "C:[[January 5th, 1972]].", policy="dob")
c("DOB", "A:And your date of birth?", "C:[[Oh seven, twelve, sixty four]].", policy="dob")

# ---- ASAPP digit rules (default policy) --------------------------------------------------------
c("DIGITS", "The order number is [[4821]].")  # ASAPP masks 4-digit numerics even for order numbers
c("DIGITS", "It's [[5 5 1]].")
c("DIGITS", "The account is [[9 0 2 1 0 4 4 5 6 7]].")  # 10 digits, not a US phone shape
c("DIGITS", "Customer ID [[1 2 3 4 5 6 7 8 9 0 1 2]].")
c("DIGITS", "Member number [[123 456]].")
c("DIGITS", "[[742]] Evergreen Terrace.")
c("DIGITS", "The ticket is [[five five one two]].")
c("DIGITS", "It's [[4111 1111]] and then some.")
c("DIGITS", "My extension is [[4402]].")
c("DIGITS", "My address is [[7, 4, 2, 3, 3, 3, 3, 4, 6, 9, 7, 4, 7, 7]].")
c("DIGITS", "Confirmation [[nine eight one]].")
c("DIGITS", "I got a text from [[8 7 2]]... no, [[872 3]].")
c(N, "Promo code 2024 didn't work.")  # a year-shaped number with no sensitive context
c("DIGITS", "The model is [[3000]].")
c("DIGITS", "It was [[1 2 3 4]], I think.")
c("DIGITS", "It's [[two oh one nine]].")  # read digit by digit: not a year

# ---- near misses: must stay (default policy) -----------------------------------------------------
c(N, "My order number is 12345.")
c(N, "I'll call you back at 3:30.")
c(N, "Let's do five thirty tomorrow.")
c(N, "It was $49.99.")
c(N, "That's forty nine dollars.")
c(N, "I was charged $1,299 last month.")
c(N, "Can I get one or two more?")
c(N, "I have 2 kids.")
c(N, "We moved here in 2019.")
c(N, "Back in nineteen ninety eight, I opened the account.")
c(N, "The meeting is on March 3rd.")
c(N, "Delivery was on June 12, 2024.")
c(N, "It's the 21st century.")
c(N, "I'm the first customer today.")
c(N, "It took 45 minutes.")
c(N, "About 20 percent off.")
c(N, "I called 3 times.")
c(N, "It costs twenty dollars a month.")
c(N, "The total was 12.50.")
c(N, "I've been with you for 10 years.")
c(N, "I bought 2 phones for 500 dollars.")
c(N, "My zip code is 97477.")
c(N, "He's 35 years old.")
c(N, "Call me at 5 pm.")
c(N, "Around 10:45 in the morning.")
c(N, "Version 2.5 of the app.")
c(N, "Oh, I see, okay.")
c(N, "Oh, four of them are broken.")
c(N, "I need one for my daughter and two for my son.")
c(N, "Press 1 for billing.")
c(N, "I'm calling about order 12345 from last week.")
c(N, "That was back in the 1990s.")
c(N, "It's 50% off.")
c(N, "I spent $2,500 on it.")
c(N, "Two thousand dollars.")
c(N, "It was a hundred and twenty bucks.")
c(N, "I've been a customer since 2015.")
c(N, "It arrived on the 3rd.")
c(N, "I'd like to pay with my card.")
c(N, "What's your card number?")
c(N, "My card was charged twice.")
c(N, "I forgot my password.")
c(N, "C:I forgot my password.", "A:No problem, I can help you reset it today.")
c(N, "My email is john.smith@gmail.com.")  # EMAIL is off by default (voice channel)
c(N, "My date of birth is March 3rd, 1985.")  # DOB is off by default
c(N, "I was born in 1985.")
c(N, "I'll be there by six fifteen.")
c("DIGITS", "It was [[twelve ninety nine]] a month.")  # a price without "dollars" is a 4-digit numeric
c(N, "Can you give me twenty four hours?")
c(N, "We have 1,000 customers.")
c(N, "My card expires soon, can I get a new one?")
c(N, "Meet me at the office at nine.")
c(N, "Give me a second.")
c(N, "I'll be home around seven thirty tonight.")
c(N, "My zip is 97477 and I'm in Oregon.")
c(N, "A:What's your order number?", "C:It's 12345.")
c(N, "A:What's the security code?", "C:[[371]]", "C:I also want to ask about my bill from last month.",
  "C:It was 49 dollars.")

# ---- near misses with DIGITS off: order numbers and ordinary numbers stay -----------------------
c(N, "My order number is 4821.", policy="nodigits")
c(N, "Order 482, please.", policy="nodigits")
c(N, "It's 742 Evergreen Terrace.", policy="nodigits")
c(N, "The confirmation number is 5 5 1 2 3 4 7.", policy="nodigits")
c(N, "Ticket 88213.", policy="nodigits")
c(N, "My extension is 4402.", policy="nodigits")
c(N, "The model is 3000.", policy="nodigits")
c(N, "I got it in 2019.", policy="nodigits")
c(N, "It's about five thirty.", policy="nodigits")
c(N, "A:What's the security code?", "C:[[371]]", "C:I also want to ask about my bill from last month.",
  "C:It was 128 in total.", policy="nodigits")
c(N, "A:What's your order number?", "C:It's 1 2 3 4 5 6 7.", policy="nodigits")
c(N, "The tracking number is 1 2 3 4 5 6 7 8.", policy="nodigits")
c(N, "Confirmation 9 8 1.", policy="nodigits")
c(N, "It was 1 2 3 4, I think.", policy="nodigits")
c(N, "Room 1412.", policy="nodigits")
c(N, "Flight 2 2 8 leaves at 5.", policy="nodigits")
c(N, "I have 3 accounts and 2 cards.", policy="nodigits")
c(N, "The zip code is 9 7 4 7 7.", policy="nodigits")
c(N, "Item number 553 is missing.", policy="nodigits")

# ---- more of the same, in mixed and messier forms ----------------------------------------------
c(CARD, "My card number is [[4111 1111 1111 1111]] expiry [[0427]] and CVV [[371]].")
c(CARD, "It's [[4 1 1 1. 1 1 1 1. 1 1 1 1. 1 1 1 1]].", policy="nodigits")
c(CARD, "The card number is [[41111111 11111111]].", policy="nodigits")
c(CARD, "It's [[4111 1111 1111 1111, 04/27, 371]].")
c(CARD, "Card number: [[4111 1111 1111 1111]]. Security code: [[371]]. Expiry: [[April 27]].",
  policy="nodigits")
c(CARD, "A:Can you confirm the last four digits of the card?", "C:Sure, [[4 4 3 2]].", policy="nodigits")
c(CARD, "C:My card number is", "C:[[4111 1111 1111 1111]]", policy="nodigits")
c(CARD, "I need to change the PIN on the card ending [[1234]].", policy="nodigits")
c(CARD, "Yeah so it's [[four five three two, zero one five one, one two three four, five six seven eight]].",
  policy="nodigits")
c(CARD, "[[4532 0151 1234 5678]]", policy="nodigits")
c(CARD, "It's [[4532015112345678]].", policy="nodigits")
c(CARD, "Sure. [[4532. 0151. 1234. 5678]].", policy="nodigits")
c(CARD, "It's [[four thousand five hundred thirty two, zero one five one, twelve thirty four, fifty six "
        "seventy eight]].", policy="nodigits")
c("SSN", "My social is [[123, 45, 6789]].", policy="nodigits")
c("SSN", "[[one two three dash four five dash six seven eight nine]]", policy="nodigits")
c("CARD_EXPIRY", "[[Zero four slash two seven]] is the expiry.", policy="nodigits")
c("CARD_EXPIRY", "Expires [[April of 2027]].", policy="nodigits")
c("CARD_EXPIRY", "Expiry date [[oh four slash two seven]].", policy="nodigits")
c("DOB", "My date of birth is [[3-15-85]].", policy="dob")
c("DOB", "I was born on the [[fifth of May nineteen seventy]].", policy="dob")
c("DOB", "I was born on [[3/15/85]].", policy="dob")
c("CVV", "The security code is [[3 7 1]] and my zip is 97477.", policy="nodigits")
c("CVV", "A:And the CVV?", "C:It's uh [[3 7, 1]].", policy="nodigits")
c("PIN", "A:What's your PIN?", "C:It's [[4 4 2 1]] but I might have changed it to [[4 4 2 2]].", policy="nodigits")
c("PIN", "The PIN is [[0 0 0 0]].", policy="nodigits")
c("PIN", "The code they texted me is [[482913]].", policy="nodigits")
c("PHONE_NUMBER", "Call me back at [[555 123 4567]] after 5.", policy="nodigits")
c("PHONE_NUMBER", "It's [[eight hundred, five five five, one two one two]].", policy="nodigits")
c("PHONE_NUMBER", "You can call me at [[5.5.5867]].", policy="nodigits")
c("PHONE_NUMBER", "My number is [[555 8675]].", policy="nodigits")
c("EMAIL", "It's [[jane at gmail dot com]].", policy="email")
c("EMAIL", "My email address is [[jane doe at gmail dot com]].", policy="email")
c("EMAIL", "It's [[john.smith at gmail.com]].", policy="email")
c("BANK_ACCOUNT_NUMBER", "My account number is [[12345678]].", policy="all")
c("BANK_ROUTING", "The routing number is [[021000021]].", policy="all")
c("DIGITS", "I live at [[1600]] Pennsylvania Avenue.")
c("DIGITS", "I paid [[forty nine ninety nine]].")  # a price without "dollars": ASAPP's 4-digit rule
c(N, "My car is a 2019 Honda.")  # years in ordinary talk stay, even under ASAPP's 4-digit rule
c(N, "Transfer 5,000 dollars.")
c(N, "It's 3:30 on the 5th.")
c(N, "It's five after three.")
c(N, "I'll take three of the blue ones and two of the red ones.")
c(N, "One moment please, two seconds.")
c(N, "I've called you like fifteen times today.")
c(N, "My car is a 2019 Honda.", policy="nodigits")
c(N, "I paid forty nine ninety nine.", policy="nodigits")
c(N, "I live at 1600 Pennsylvania Avenue.", policy="nodigits")
c(N, "Let's say nine to five, Monday to Friday.")
c(N, "I'm on floor 12.")
c(N, "It's the second time this week.")
c(CARD, "It's [[4111 1111]] and [[1111 1111]].", policy="nodigits")  # Luhn joins the two halves
c(CARD, "[[four one one one one one one one]], then uh [[one one one one one one one one]], okay?",
  policy="nodigits")
c(CARD, "[[5555 5555]], sorry, [[5555 4444]] is the card.", policy="nodigits")

# ---- held out: written after the engine, run once before any change (see the bench note) ------
c(CARD, "Okay, my card number is [[4-1-1-1, 1-1-1-1, 1-1-1-1, 1-1-1-1]].")
c(CARD, "It's [[4111, 1111, 1111, 1111]].", policy="nodigits")
c(CARD, "[[Four one one one. One one one one. One one one one. One one one one]].", policy="nodigits")
c(CARD, "A:Could you read the number on the card for me?",
  "C:Yeah, it's [[forty-one eleven, eleven eleven, eleven eleven, eleven eleven]].", policy="nodigits")
c(CARD, "Uh, let me get my wallet. Okay, it's [[5 4 2 4, 0 0 0 0, 0 0 0 0, 0 0 1 5]].", policy="nodigits")
c(CARD, "The card is [[4111 1111 1111 1111]] and the expiration is [[12/25]] and the code is [[123]].",
  policy="nodigits")
c(CARD, "My card number is [[4111 1111]] for [[1111 1111]].", policy="nodigits")
c(CARD, "Card number is [[4111 1111 1111 1111 1]].", policy="nodigits")
c("CVV", "A:What is the CVV on the back of the card?", "C:It's [[one two three]].", policy="nodigits")
c("CVV", "A:And the security code?", "C:[[Seven, seven, three]].", policy="nodigits")
c("CVV", "Three-digit code on the back is [[9 1 4]].", policy="nodigits")
c("CVV", "A:The expiration and CVV please.", "C:[[0427, 371]].", policy="nodigits")
c("CARD_EXPIRY", "A:What's the expiration date?", "C:It's [[oh six, twenty eight]].", policy="nodigits")
c("CARD_EXPIRY", "A:Expiration?", "C:[[June 2028]].", policy="nodigits")
c("CARD_EXPIRY", "It expires [[6/28]].", policy="nodigits")
c("CARD_EXPIRY", "The expiration date on the card is [[zero six slash two eight]].", policy="nodigits")
c("SSN", "A:Can you verify your social security number?", "C:Sure. [[2 1 9 0 9 9 9 9 9]].", policy="nodigits")
c("SSN", "My social is [[219 09 9999]].", policy="nodigits")
c("SSN", "A:I just need the last four of your social.", "C:It's [[9 9 9 9]].", policy="nodigits")
c("SSN", "My social is [[one two three, oh four, five six seven eight]].", policy="nodigits")
c("PIN", "A:Please say your four digit PIN.", "C:[[One, two, three, four]].", policy="nodigits")
c("PIN", "My pin's [[7 7 3 1]].", policy="nodigits")
c("PASSWORD", "A:What's your account password?", "C:It's [[Fluffy2019 with a capital F]].")
c("PASSWORD", "Yeah my password is [[probably my dog's name, Rex123]].")
c("EMAIL", "It's [[jsmith1985 at gmail dot com]].", policy="email")
c("EMAIL", "My email is [[john underscore doe at yahoo dot com]].", policy="email")
c("EMAIL", "You can email me at [[mary.jones@example.org]].", policy="email")
c("EMAIL", "Sure, it's [[t dot nguyen at outlook dot com]].", policy="email")
c("PHONE_NUMBER", "A:What's a good number to reach you at?", "C:It's [[415-555-0132]].", policy="nodigits")
c("PHONE_NUMBER", "My cell is [[five one zero, five five five, zero one nine eight]].", policy="nodigits")
c("PHONE_NUMBER", "Call me back at [[1 (800) 555-0199]].", policy="nodigits")
c("PHONE_NUMBER", "My number's [[212 555 0147]].", policy="nodigits")
c("PHONE_NUMBER", "It's [[555-867-5309]] extension 12.", policy="nodigits")
c("DOB", "A:And your date of birth?", "C:It's [[7/4/1976]].", policy="dob")
c("DOB", "I was born [[March 3rd, 1985]].", policy="dob")
c("DOB", "My birthday's the [[4th of July, 1976]].", policy="dob")
c("DOB", "Date of birth is [[12-25-1980]].", policy="dob")
c(N, "I'd like to book for 2 people at 7:30.")
c(N, "The bill was $125.40 this month.")
c(N, "I've had the account for about 15 years.")
c(N, "I'm calling about the charge on March 15th.")
c(N, "It'll take 3 to 5 business days.")
c(N, "Can you send me the 2 forms?")
c(N, "Is that 1 or 2 payments?")
c(N, "I need the 2023 tax statement.")
c(N, "My order number is 55123.")
c(N, "Order number 5 5 1 2 3.")
c(N, "I've been waiting 45 minutes.")
c(N, "It's apartment 4B.")
c(N, "I'll call back at 4:15.")
c(N, "Tuesday at ten thirty works.")
c(N, "We're at 100 percent.")
c(N, "I have two questions, first about billing and second about my card.")
c(N, "One sec.")
c(N, "The 2023 statement and the 2024 one.", policy="nodigits")
