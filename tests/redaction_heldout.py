"""Held-out redaction corpus: multi-turn call snippets as the Whisper recogniser writes them.

Written from the redaction rules (DESIGN.md "Redaction", control-apis.md A.6) and the measured
recogniser habits (asr-notes.md 7) only, independently of the engine and of its own corpus.

Markup inside a turn's text:
  [ ... ]  every letter and digit inside must be hidden (become '#') in the redacted text;
  { ... }  every letter and digit inside must survive unchanged (a near miss);
  elsewhere nothing is checked.
The brackets are stripped before the text reaches the redactor.

Run `python tests/redaction_heldout.py` for the summary figures (`--unadjusted`: every snippet under
the plain ASAPP default policy, as in the first measurement).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

A, C = "agent", "customer"


@dataclass
class Turn:
    role: str
    text: str  # plain text given to the redactor
    hide: list[tuple[int, int]] = field(default_factory=list)
    keep: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Snippet:
    sid: str
    kind: str
    turns: list[Turn]
    policy: str = "default"  # a key of POLICIES
    adjusted: str = ""  # why the expectation was changed after the first run (counted separately)


def parse(role: str, marked: str) -> Turn:
    out: list[str] = []
    hide: list[tuple[int, int]] = []
    keep: list[tuple[int, int]] = []
    start = None
    mode = None
    for ch in marked:
        if ch in "[{":
            assert mode is None, f"nested markup in {marked!r}"
            mode = "hide" if ch == "[" else "keep"
            start = len(out)
        elif ch in "]}":
            assert mode == ("hide" if ch == "]" else "keep"), f"bad markup in {marked!r}"
            (hide if mode == "hide" else keep).append((start, len(out)))
            mode = None
        else:
            out.append(ch)
    assert mode is None, f"unclosed markup in {marked!r}"
    return Turn(role, "".join(out), hide, keep)


SNIPPETS: list[Snippet] = []


def S(sid: str, kind: str, *turns: tuple[str, str], policy: str = "default", adjusted: str = "") -> None:
    SNIPPETS.append(Snippet(sid, kind, [parse(r, t) for r, t in turns], policy, adjusted))


# Adjustment shared by the email and date-of-birth snippets (see the report in the module summary).
OFF_BY_DEFAULT = "ASAPP's voice default leaves EMAIL and DOB off by design, so these run with that entity on"


# --------------------------------------------------------------------------------------------------
# Card numbers (13-19 digits, every Whisper form, split over turns, corrections, miscounts)
# --------------------------------------------------------------------------------------------------
S("card-plain-groups", "card",
  (A, "Thank you. Can I have the long number on the card, please?"),
  (C, "Sure, it's [4526 0181 5908 3012]."))
S("card-whisper-comma-miscount", "card",
  (A, "Go ahead with the card number whenever you're ready."),
  (C, "Okay, it's [41, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]."))
S("card-hyphen-digits", "card",
  (A, "What's the card number?"),
  (C, "Okay, it's [4-6-6-1-3-1-8-6-0-9-1-3-9-0-9-0]."))
S("card-split-agent-repeats", "card",
  (A, "Go ahead with the card number."),
  (C, "It's [4960 3082],"),
  (A, "[4960 3082], okay."),
  (C, "[4628 1940]."),
  (A, "Got it, ending in [1940]."))
S("card-amex-groups", "card",
  (A, "And what card will you be using today?"),
  (C, "It's an Amex, [3466 712768 42680]."))
S("card-amex-spoken-words", "card",
  (A, "Please read me the card number."),
  (C, "[Three seven four six], [five six three two one two], [two three three oh four]."))
S("card-two-digit-groups", "card",
  (A, "Card number, please."),
  (C, "Yeah, [37, 79, 24, 40, 26, 85, 99, 0]."))
S("card-19-digits", "card",
  (A, "Can I get the card number?"),
  (C, "It's a long one. [4139 6245 9571 1777 745]."))
S("card-13-digits-plain", "card",
  (C, "My card number is [4901092815906]."))
S("card-diners-14", "card",
  (A, "What's the number on the card?"),
  (C, "[3617 603137 2150]."))
S("card-correction-restart", "card",
  (A, "Go ahead with the card number."),
  (C, "[4, 8, 2, 1], no wait, sorry, [4, 8, 2, 1, 9, 9, 3, 5, 1, 8, 1, 9, 0, 9, 3, 4]."))
S("card-disfluent-groups", "card",
  (A, "Okay, what's the card number?"),
  (C, "Um, [4786], uh, [5797], [5432], [3199]."))
S("card-hyphen-groups", "card",
  (C, "I want to pay with my Visa. It's [4487-5749-1186-2520]."))
S("card-mixed-words-digits", "card",
  (A, "The sixteen digit card number, please."),
  (C, "[Five one seven six], [0 1 8 9], [5559], [7975]."))
S("card-agent-full-readback", "card",
  (C, "The card is [5511 4710 4974 6500]."),
  (A, "Let me repeat that, [5511 4710 4974 6500], is that right?"),
  (C, "Yes, that's right."))
S("card-whisper-dots", "card",
  (A, "Which card would you like to use?"),
  (C, "The Mastercard, [2221.7529.1703.4238]."))
S("card-three-turns-backchannel", "card",
  (A, "Go ahead with the Discover number."),
  (C, "Okay, [6011 5289],"),
  (A, "Mm-hmm."),
  (C, "[0786 6663]."))
S("card-miscount-17", "card",
  (A, "Card number?"),
  (C, "[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]."))
S("card-miscount-short-11", "card",
  (A, "Can you read me the card number?"),
  (C, "Yes, [4532 0151 128]."))
S("card-tens-words", "card",
  (A, "Card number, whenever you're ready."),
  (C, "[Forty five thirty two], [oh one fifty one], [twelve eighty three], [oh three sixty six]."))
S("card-pairs", "card",
  (A, "What's the card number?"),
  (C, "[45, 32, 01, 51, 12, 83, 03, 66]."))
S("card-unbroken", "card",
  (C, "Card number [4532015112830366] and I'd like to pay the whole thing."))
S("card-jcb", "card",
  (A, "What's the number on the card?"),
  (C, "It's a JCB card, [3508 4148 5253 8887]."))
S("card-unionpay-17", "card",
  (C, "I'm using my UnionPay card, the number is [62539336338750043]."))
S("card-split-13-second-turn-short", "card",
  (C, "My Visa is [4222 2222]"),
  (A, "Okay."),
  (C, "[2222 2]."))
S("card-spaced-single-digits", "card",
  (A, "Card number, please."),
  (C, "[5 5 5 5, 5 5 5 5, 5 5 5 5, 4 4 4 4]."))
S("card-four-comma-groups", "card",
  (A, "Go ahead."),
  (C, "The card number is [5105, 1051, 0510, 5100]."))
S("card-on-file-ending", "card",
  (A, "I see a card on file ending in [4238]. Do you want to use that one?"),
  (C, "Yes, please."))
S("card-hyphen-miscount-15", "card",
  (A, "Card number?"),
  (C, "It's [4-1-1-1-1-1-1-1-1-1-1-1-1-1-1]."))
S("card-agent-interrupts", "card",
  (C, "The card is [4661], [3186]"),
  (A, "Sorry, [4661 3186] and then?"),
  (C, "[0913 9090]."))
S("card-mixed-spoken-and-numerals", "card",
  (A, "And the card number?"),
  (C, "[Four five two six], [0181], [fifty nine oh eight], [thirty twelve]."))
S("card-amex-hyphens", "card",
  (C, "Yeah, it's the Amex, [3-7-8-2-8-2-2-4-6-3-1-0-0-0-5]."))
S("card-amex-spaced-digits", "card",
  (A, "Can you read the number on the front of the card?"),
  (C, "The number on the front is [3 7 4 6 5 6 3 2 1 2 2 3 3 0 4]."))
S("card-whisper-first-group-merged", "card",
  (A, "Okay, go ahead with the card number."),
  (C, "[45, 3, 2, 0, 1, 5, 1, 1, 2, 8, 3, 0, 3, 6, 6]."))
S("card-correction-single-group", "card",
  (C, "It's [6011 1111], wait, no, [6011 1211 1111 1117]."))
S("card-repeat-request", "card",
  (C, "[4661 3186 0913 9090]."),
  (A, "I'm sorry, you broke up. Can you repeat the last eight?"),
  (C, "[0913], [9090]."))
S("card-dash-and-comma-mix", "card",
  (A, "What's the card number on the account?"),
  (C, "It's [5176-0189-5559], [7975]."))
S("card-dot-groups-amex", "card",
  (C, "Card number is [3779.244026.85990]."))
S("card-spoken-oh-words", "card",
  (A, "Go ahead."),
  (C, "[Six oh one one], [oh nine nine oh], [one three nine], [four two four]."))
S("card-four-turns-with-near-miss", "card",
  (A, "Can I get the card number?"),
  (C, "Hold on, give me {one} second, it's in my wallet."),
  (C, "Okay, [5176 0189 5559 7975]."),
  (A, "Thank you."))

# --------------------------------------------------------------------------------------------------
# Expiry dates
# --------------------------------------------------------------------------------------------------
S("exp-slash", "expiry",
  (A, "And the expiration date?"),
  (C, "[08/27]."))
S("exp-spaced", "expiry",
  (C, "The card expires [08] [27]."))
S("exp-words", "expiry",
  (A, "What's the expiry date on the card?"),
  (C, "[Oh eight], [twenty seven]."))
S("exp-month-year", "expiry",
  (A, "Expiration date?"),
  (C, "August [2027]."))
S("exp-short-slash", "expiry",
  (A, "And when does it expire?"),
  (C, "[8/27]."))
S("exp-slash-word", "expiry",
  (A, "What's the expiration on that card?"),
  (C, "It's [11] slash [26]."))
S("exp-four-digits", "expiry",
  (A, "Expiry date, please."),
  (C, "[1226]."))
S("exp-comma-digits", "expiry",
  (C, "Expiration is [0, 9, 2, 6]."))
S("exp-hyphen", "expiry",
  (A, "Okay, and the exp date?"),
  (C, "Um, [12-25]."))
S("exp-month-name-year-next-turn", "expiry",
  (A, "When does the card expire?"),
  (C, "June"),
  (C, "[2026]."))
S("exp-good-thru", "expiry",
  (C, "It says good through [03/28]."))
S("exp-after-card-no-cue", "expiry",
  (A, "Card number, please."),
  (C, "[4786 5797 5432 3199]."),
  (A, "And the date?"),
  (C, "[05/29]."))

# --------------------------------------------------------------------------------------------------
# CVV / security code
# --------------------------------------------------------------------------------------------------
S("cvv-three-digits-back", "cvv",
  (A, "And the three digits on the back?"),
  (C, "[737]."))
S("cvv-security-code-commas", "cvv",
  (C, "Security code is [4, 1, 2]."))
S("cvv-words", "cvv",
  (A, "What's the CVV?"),
  (C, "[Seven three seven]."))
S("cvv-disfluent", "cvv",
  (A, "Can I get the CVV on the back?"),
  (C, "Uh, [0, 4, 9]."))
S("cvv-amex-four-front", "cvv",
  (A, "For American Express it's the four digits on the front, above the number."),
  (C, "[1234]."))
S("cvv-next-turn-after-pause", "cvv",
  (A, "Can you read me the security code?"),
  (C, "Sure, {one} second."),
  (C, "[6 6 2]."))
S("cvv-oh-word", "cvv",
  (C, "The code on the back is [three oh nine]."))
S("cvv-miscount-two", "cvv",
  (A, "And the CVV?"),
  (C, "[47]."))
S("cvv-hyphen", "cvv",
  (C, "The last three on the back, [5-5-1]."))
S("cvv-spaced", "cvv",
  (A, "Last thing, the three digit code on the back of the card."),
  (C, "It's [8 1 5]."))
S("cvv-after-expiry-same-turn", "cvv",
  (A, "Expiration and security code, please."),
  (C, "[10/28] and the code is [305]."))
S("cvv-correction", "cvv",
  (A, "And the security code?"),
  (C, "[9, 1], sorry, [9, 1, 4]."))

# --------------------------------------------------------------------------------------------------
# SSN
# --------------------------------------------------------------------------------------------------
S("ssn-dashes", "ssn",
  (A, "For verification, can I have your social security number?"),
  (C, "My social is [078-05-1120]."))
S("ssn-spaces", "ssn",
  (C, "Social security number [123 45 6789]."))
S("ssn-commas", "ssn",
  (A, "Can you give me your social?"),
  (C, "[5, 3, 6, 2, 2, 8, 1, 7, 4]."))
S("ssn-words", "ssn",
  (A, "Your social security number, please."),
  (C, "[Five three six], [two two], [eight one seven four]."))
S("ssn-last-four-agent-asks", "ssn",
  (A, "Can you verify the last four of your social?"),
  (C, "[6789]."))
S("ssn-last-four-commas", "ssn",
  (C, "The last four of my social are [2, 2, 1, 0]."))
S("ssn-last-four-words", "ssn",
  (C, "Last 4 of my social is [four three two one]."))
S("ssn-split-turns", "ssn",
  (C, "Social is [219 09]"),
  (A, "[219 09], go on."),
  (C, "[9999]."))
S("ssn-unbroken", "ssn",
  (C, "It's [219099999]."))
S("ssn-hyphen-digits", "ssn",
  (A, "And your SSN?"),
  (C, "SSN, [5-3-6-2-2-8-1-7-4]."))
S("ssn-miscount-eight", "ssn",
  (A, "Can I get your social security number?"),
  (C, "[53622817]."))
S("ssn-dots", "ssn",
  (C, "Social security number is [536.22.8174]."))
S("ssn-correction", "ssn",
  (C, "My social is [536 22], no, sorry, [536 23 8174]."))
S("ssn-agent-readback-last-four", "ssn",
  (C, "[536-23-8174]."),
  (A, "Thank you, so last four [8174]."))
S("ssn-tax-id-phrase", "ssn",
  (A, "I need the social security number on the account."),
  (C, "Um, okay, uh, [four five six], [seven eight], [nine zero one two]."))

# --------------------------------------------------------------------------------------------------
# PIN
# --------------------------------------------------------------------------------------------------
S("pin-plain", "pin",
  (C, "My PIN is [4321]."))
S("pin-spaced", "pin",
  (A, "What's the PIN number?"),
  (C, "PIN number [2 5 8 0]."))
S("pin-words", "pin",
  (C, "The pin is [one nine eight four]."))
S("pin-zeros-commas", "pin",
  (A, "Can you give me the PIN on the account?"),
  (C, "It's [0, 0, 0, 0]."))
S("pin-six-digit", "pin",
  (C, "My account PIN, it's [739 214]."))
S("pin-agent-asks-four-digit", "pin",
  (A, "What's the four digit PIN on the account?"),
  (C, "[8 8 2 1]."))
S("pin-passcode-five", "pin",
  (C, "My passcode is [53190]."))

# --------------------------------------------------------------------------------------------------
# Passwords
# --------------------------------------------------------------------------------------------------
S("pw-plain", "password",
  (C, "My password is [sunshine123]."))
S("pw-spelled-letters", "password",
  (A, "Can you spell the password for me?"),
  (C, "It's capital [T, I, G, E, R], [9, 9], exclamation point."))
S("pw-as-in", "password",
  (C, "The password is [B] as in boy, [L, U, E], [7, 7]."))
S("pw-mixed-case-year", "password",
  (A, "What's the account password?"),
  (C, "Password, [Summer2024]."))
S("pw-spoken-words", "password",
  (A, "I'll need the password on the account."),
  (C, "It's [fluffy dog 42], all one word."))
S("pw-next-turn", "password",
  (A, "What's your online password?"),
  (C, "Um, it's [Maple]"),
  (C, "[88], then a dollar sign."))

# --------------------------------------------------------------------------------------------------
# Email addresses
# --------------------------------------------------------------------------------------------------
S("email-written", "email",
  (C, "My email is [john.smith]@gmail.com."),
  policy="email", adjusted=OFF_BY_DEFAULT)
S("email-spoken-dot-at", "email",
  (A, "And what's the best email for you?"),
  (C, "It's [john] dot [smith] at gmail dot com."),
  policy="email", adjusted=OFF_BY_DEFAULT)
S("email-digits-local", "email",
  (C, "You can send it to [jsmith42]@yahoo.com."),
  policy="email", adjusted=OFF_BY_DEFAULT)
S("email-spoken-letters-digits", "email",
  (A, "What email should we use?"),
  (C, "It's [J Smith 42] at yahoo.com."),
  policy="email", adjusted=OFF_BY_DEFAULT)
S("email-underscore-spoken", "email",
  (C, "My email is [maria] underscore [lopez] at outlook dot com."),
  policy="email", adjusted=OFF_BY_DEFAULT)
S("email-written-org", "email",
  (A, "Can you confirm the email on file?"),
  (C, "Yes, [k.patel]@brightline.org."),
  policy="email", adjusted=OFF_BY_DEFAULT)
S("email-agent-readback", "email",
  (C, "It's [dana.w88]@hotmail.com."),
  (A, "So that's [dana.w88]@hotmail.com?"),
  policy="email", adjusted=OFF_BY_DEFAULT)

# --------------------------------------------------------------------------------------------------
# Phone numbers
# --------------------------------------------------------------------------------------------------
S("phone-dashes", "phone",
  (C, "You can reach me at [555-867-5309]."))
S("phone-whisper-dots", "phone",
  (A, "What's a good callback number?"),
  (C, "[5.5.5867.5309]."))
S("phone-parens", "phone",
  (C, "My number is [(617) 555-0142]."))
S("phone-words", "phone",
  (A, "Best number to call you back?"),
  (C, "[Five five five], [eight six seven], [five three oh nine]."))
S("phone-area-code-parts", "phone",
  (C, "Area code [617], then [555], [0142]."))
S("phone-agent-readback", "phone",
  (C, "My cell is [312 555 0199]."),
  (A, "That's [312-555-0199]?"),
  (C, "Yes."))
S("phone-seven-digit", "phone",
  (C, "Call me at [867-5309] any time after {5}."))
S("phone-comma-digits", "phone",
  (A, "And a phone number?"),
  (C, "[5, 5, 5, 2, 3, 4, 1, 9, 8, 7]."))
S("phone-split-turns", "phone",
  (A, "What's your cell phone number?"),
  (C, "[917]"),
  (C, "[555], [2231]."))
S("phone-international", "phone",
  (C, "My mobile is [+44 20 7946 0958]."))
S("phone-unbroken-ten", "phone",
  (C, "Yeah, the number is [6175550142]."))
S("phone-one-prefix", "phone",
  (A, "What number are you calling from?"),
  (C, "[1-312-555-0177]."))

# --------------------------------------------------------------------------------------------------
# Dates of birth
# --------------------------------------------------------------------------------------------------
S("dob-slashes", "dob",
  (A, "Can you verify your date of birth?"),
  (C, "[03/14/1979]."),
  policy="dob", adjusted=OFF_BY_DEFAULT)
S("dob-month-words", "dob",
  (C, "I was born March [3]rd, [1985]."),
  policy="dob", adjusted=OFF_BY_DEFAULT)
S("dob-short-hyphen", "dob",
  (C, "DOB is [7-4-82]."),
  policy="dob", adjusted=OFF_BY_DEFAULT)
S("dob-ordinal", "dob",
  (A, "And your date of birth?"),
  (C, "January [5]th, [1990]."),
  policy="dob", adjusted=OFF_BY_DEFAULT)
S("dob-hyphen-two-digit-year", "dob",
  (A, "Date of birth, please."),
  (C, "[12-9-64]."),
  policy="dob", adjusted=OFF_BY_DEFAULT)
S("dob-spoken", "dob",
  (C, "My birthday is [oh four], [twelve], [seventy one]."),
  policy="dob", adjusted=OFF_BY_DEFAULT)
S("dob-date-of-birth-words", "dob",
  (C, "Date of birth June [2]nd, [1988]."),
  policy="dob", adjusted=OFF_BY_DEFAULT)

# --------------------------------------------------------------------------------------------------
# Long account / member numbers (9- and 10-digit runs)
# --------------------------------------------------------------------------------------------------
S("acct-ten", "digits",
  (C, "My account number is [1029384756]."))
S("acct-member-nine", "digits",
  (A, "Do you have your member ID?"),
  (C, "Yes, [884 213 907]."))
S("acct-routing-commas", "digits",
  (C, "Routing number [0, 2, 1, 0, 0, 0, 0, 2, 1]."))
S("acct-ten-words", "digits",
  (A, "What's the account number?"),
  (C, "[Seven seven two], [four one nine], [three three eight one]."))

# --------------------------------------------------------------------------------------------------
# Near misses: nothing sensitive, everything marked must stay visible
# --------------------------------------------------------------------------------------------------
S("nm-money-cents", "near",
  (A, "Your total comes to {$45.99}."),
  (C, "Okay, that's fine."))
S("nm-money-charged-twice", "near",
  (C, "I was charged {$12.50} twice this month."))
S("nm-money-balance-thousands", "near",
  (A, "Your current balance is {$1,245.60}."))
S("nm-money-words", "near",
  (A, "It's {twenty five} dollars a month."))
S("nm-appointment-date-time", "near",
  (A, "The appointment is on March {15}th at {3:30}."))
S("nm-window-hours", "near",
  (A, "Can someone be home between {9} and {11} AM?"))
S("nm-time-1015", "near",
  (A, "How about {10:15} tomorrow morning?"),
  (C, "Yeah, {10:15} works."))
S("nm-lines-one-or-two", "near",
  (C, "I have {2} lines on the account and maybe {one or two} more I want to add."))
S("nm-street-number", "near",
  (C, "I live at {12} Oak Street."))
S("nm-ordinals", "near",
  (C, "This is the {second} time I've called, well, the {third} actually."))
S("nm-order-number", "near",
  (A, "Do you have the order number?"),
  (C, "My order number is {48213}."))
S("nm-ticket-number", "near",
  (A, "Your ticket number is {55102}."))
S("nm-order-number-commas", "near",
  (C, "Order number {7, 3, 0, 1, 9}."))
S("nm-version-app", "near",
  (C, "I'm on version {2.3.1} of the app."))
S("nm-version-ios", "near",
  (C, "My phone is on iOS {17.4}."))
S("nm-percent-sign", "near",
  (A, "You'll get {20}% off for the first {6} months."))
S("nm-percent-word", "near",
  (A, "That's a {15} percent discount."))
S("nm-percent-decimal", "near",
  (A, "The promo takes {12.5}% off."))
S("nm-hold-time", "near",
  (C, "I waited {45} minutes on hold."))
S("nm-quantity-boxes", "near",
  (C, "I need {3} more boxes."))
S("nm-two-seconds", "near",
  (C, "Give me {two} seconds."))
S("nm-press-one", "near",
  (A, "Next time you can press {1} for billing."))
S("nm-delivered-on", "near",
  (C, "It was delivered on the {21st}."))
S("nm-money-small", "near",
  (A, "It's {$9.99} for the add-on."))
S("nm-time-pm", "near",
  (A, "The technician will be there at {2:45} PM."))
S("nm-stars", "near",
  (C, "I'd give you guys {5} stars."))
S("nm-plan-length", "near",
  (A, "You're on the {24}-month plan."))
S("nm-kids-ages", "near",
  (C, "My kids are {7} and {10}."))
S("nm-weeks-ago", "near",
  (C, "Um, I think it was like {2} or {3} weeks ago."))
S("nm-money-three-digit", "near",
  (A, "The new router is {$129}."))
S("nm-money-dollars-word", "near",
  (C, "They charged me {30} dollars and {50} cents."))
S("nm-days-to-ship", "near",
  (A, "It should arrive in {3} to {5} business days."))
S("nm-ticket-with-words", "near",
  (A, "I opened ticket {6, 1, 4, 7, 2} for you."))
S("nm-one-more-thing", "near",
  (C, "{One} more thing, can you also check the {other} account?"))
S("nm-floor-room", "near",
  (C, "It's on the {4}th floor, room {12}."))
S("nm-year-plan-date", "near",
  (A, "Your contract ends on June {30}th."))
S("nm-speed", "near",
  (C, "I'm only getting about {20} megabits."))
S("nm-digits-count", "near",
  (A, "It's the {16} digit number on the front of the card."))

# --------------------------------------------------------------------------------------------------
# Whole calls: sensitive items and near misses in the same call
# --------------------------------------------------------------------------------------------------
S("call-payment-full", "mixed",
  (A, "The total is {$89.50}. Can I have the card number?"),
  (C, "[4821 9935 1819 0934]."),
  (A, "Expiration?"),
  (C, "[09/27]."),
  (A, "And the three digits on the back?"),
  (C, "[552]."),
  (A, "Thanks, that's {$89.50} charged. Your order number is {48213}."))
S("call-card-then-shipping", "mixed",
  (C, "The card is [4526 0181 5908 3012]."),
  (A, "Great. It'll ship in {2} to {3} days."),
  (C, "Okay, and it'll be {$15} for shipping?"))
S("call-verify-then-appointment", "mixed",
  (A, "Can you verify the last four of your social?"),
  (C, "[1120]."),
  (A, "Thank you. I can book you for Tuesday the {14}th at {9:30}."),
  (C, "Yeah, {9:30} is fine."))
S("call-phone-then-order", "mixed",
  (A, "What's a good number to reach you?"),
  (C, "[617-555-0142]."),
  (A, "Okay, and I'm looking at order number {48213}, {3} items."))
S("call-card-correction-and-cvv", "mixed",
  (A, "Go ahead with the card."),
  (C, "[5176 0189], oh sorry, wait."),
  (C, "[5176 0189 5559 7975]."),
  (A, "And the security code?"),
  (C, "[4, 4, 1]."),
  (A, "Perfect, your payment of {$62.40} went through."))
S("call-dob-and-email", "mixed",
  (A, "Date of birth?"),
  (C, "[04/12/1971]."),
  (A, "And the email?"),
  (C, "[greg.h]@aol.com."),
  (A, "Thanks, you'll get a confirmation in {5} minutes."),
  policy="email+dob", adjusted=OFF_BY_DEFAULT)
S("call-pin-then-balance", "mixed",
  (A, "Please say your four digit PIN."),
  (C, "[9, 3, 7, 1]."),
  (A, "Thank you. Your balance is {$12.75}."))
S("call-amex-with-cid", "mixed",
  (C, "I'll use my Amex. [3782 822463 10005]."),
  (A, "And the four digit code on the front?"),
  (C, "[7, 7, 2, 1]."),
  (A, "That's {$240} for the {2} tickets."))
S("call-spoken-card-and-expiry-words", "mixed",
  (A, "Ready for the card number."),
  (C, "[Four one three nine], [six two four five], [nine five seven one], [one seven seven seven]."),
  (A, "Expiration date?"),
  (C, "[Oh two], [twenty nine]."))
S("call-ssn-and-street", "mixed",
  (A, "Can I get your address and social?"),
  (C, "{12} Elm Street, and my social is [219-09-9999]."))
S("call-card-agent-partial-readback", "mixed",
  (C, "Card number is [6011 5289 0786 6663]."),
  (A, "Let me confirm, starting with [6011] and ending in [6663]?"),
  (C, "Yep."))
S("call-card-and-percentage", "mixed",
  (A, "With the card on file you get {5}% back."),
  (C, "Then use a new card, [4487 5749 1186 2520]."))


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------
@dataclass
class TurnResult:
    leaked: list[str]  # hidden spans with visible characters (as the visible text)
    overmasked: list[str]  # keep spans with masked characters
    sens_total: int
    sens_digits: int
    sens_leaked: int
    sens_digits_leaked: int
    keep_total: int
    keep_masked: int


def visible_map(src: str, out: str) -> list[bool]:
    """For each char of src, whether it survives unchanged in out."""
    if len(src) == len(out):
        return [a == b for a, b in zip(src, out)]
    vis = [False] * len(src)
    sm = difflib.SequenceMatcher(None, src, out, autojunk=False)
    for tag, i1, i2, _j1, _j2 in sm.get_opcodes():
        if tag == "equal":
            for i in range(i1, i2):
                vis[i] = True
    return vis


def score_turn(turn: Turn, out: str) -> TurnResult:
    vis = visible_map(turn.text, out)
    r = TurnResult([], [], 0, 0, 0, 0, 0, 0)
    for a, b in turn.hide:
        bad = False
        for i in range(a, b):
            ch = turn.text[i]
            if not ch.isalnum():
                continue
            r.sens_total += 1
            r.sens_digits += ch.isdigit()
            if vis[i]:
                r.sens_leaked += 1
                r.sens_digits_leaked += ch.isdigit()
                bad = True
        if bad:
            r.leaked.append(turn.text[a:b])
    for a, b in turn.keep:
        bad = False
        for i in range(a, b):
            if not turn.text[i].isalnum():
                continue
            r.keep_total += 1
            if not vis[i]:
                r.keep_masked += 1
                bad = True
        if bad:
            r.overmasked.append(turn.text[a:b])
    return r


def run_snippet(snippet: Snippet, make_redactor) -> list[tuple[Turn, str, TurnResult]]:
    red = make_redactor()
    rows = []
    for turn in snippet.turns:
        out = red.redact_final(turn.text, role=turn.role).text
        rows.append((turn, out, score_turn(turn, out)))
    return rows


def policy(name: str):
    from dataclasses import replace

    from callscribe.redact import RedactionPolicy

    base = RedactionPolicy.asapp_default()
    extra = {"default": set(), "email": {"EMAIL"}, "dob": {"DOB"}, "email+dob": {"EMAIL", "DOB"}}[name]
    return replace(base, entities=base.entities | extra)


def redactor_for(snippet: Snippet):
    from callscribe.redact import CallRedactor

    return lambda: CallRedactor(policy(snippet.policy))


_COUNTS = ("snippets", "passed", "sens", "sens_leaked", "digits", "digits_leaked", "keep", "keep_masked")


def summary(adjusted: bool = True) -> dict:
    """Figures over the corpus, overall and per kind (`by_kind`); adjusted=False runs every snippet
    under the plain default policy."""
    from callscribe.redact import CallRedactor

    tot = dict.fromkeys(_COUNTS, 0) | dict(failures=[], adjusted=0, by_kind={})
    for sn in SNIPPETS:
        make = redactor_for(sn) if adjusted else (lambda: CallRedactor(policy("default")))
        kind = tot["by_kind"].setdefault(sn.kind, dict.fromkeys(_COUNTS, 0))
        tot["adjusted"] += bool(sn.adjusted)
        ok = True
        for turn, out, r in run_snippet(sn, make):
            for row in (tot, kind):
                row["sens"] += r.sens_total
                row["sens_leaked"] += r.sens_leaked
                row["digits"] += r.sens_digits
                row["digits_leaked"] += r.sens_digits_leaked
                row["keep"] += r.keep_total
                row["keep_masked"] += r.keep_masked
            if r.leaked or r.overmasked:
                ok = False
                tot["failures"].append((sn.sid, sn.kind, turn.text, out, r.leaked, r.overmasked))
        for row in (tot, kind):
            row["snippets"] += 1
            row["passed"] += ok
    return tot


def main() -> None:
    import sys

    s = summary(adjusted="--unadjusted" not in sys.argv)
    for sid, kind, text, out, leaked, over in s["failures"]:
        print(f"[{kind}] {sid}\n   in : {text}\n   out: {out}")
        if leaked:
            print(f"   LEAK: {leaked}")
        if over:
            print(f"   OVERMASK: {over}")
    print()
    print(f"snippets passed {s['passed']}/{s['snippets']}")
    print(f"sensitive digits leaked {s['digits_leaked']}/{s['digits']}; "
          f"sensitive characters (digits+letters) leaked {s['sens_leaked']}/{s['sens']}")
    print(f"near-miss characters wrongly masked {s['keep_masked']}/{s['keep']}")
    print(f"snippets with an adjusted expectation: {s['adjusted']}")


if __name__ == "__main__":
    main()
