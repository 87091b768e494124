"""Synthetic training corpus for tachyon's embedded default models, composed from our own word lists
and templates and fully determined by a seed: chat dialogues about robots and edge devices, short
stories, how-to instructions, device logs, and simple facts / arithmetic, as chat samples and plain text.

    python3 corpus.py --seed 1 --count 5 --show       # print a few samples
    python3 corpus.py --seed 1 --count 100000 --out train.jsonl
"""
import argparse
import json
import random

# ---------------------------------------------------------------------------------------------------------
# Word lists

ROBOTS = [
    "Kestrel", "Juniper", "Pico", "Wren", "Bolt", "Tern", "Orbit", "Nova", "Quill", "Sprocket", "Pebble",
    "Marlin", "Finch", "Comet", "Ember", "Tango", "Basil", "Otto", "Mica", "Zephyr", "Clover", "Dusk",
    "Echo", "Fable", "Gizmo", "Hazel", "Iris", "Jet", "Koa", "Lumen", "Moss", "Nib", "Onyx", "Pixel",
    "Quartz", "Rook", "Sable", "Tully", "Umber", "Vega", "Widget", "Yarrow", "Zinc", "Cobalt", "Dot",
    "Flint", "Gale", "Ivy", "Lark", "Maple", "Nimbus", "Olive", "Piper", "Rivet", "Sparrow", "Tinker",
]
ROBOT_KINDS = [
    "delivery robot", "warehouse rover", "lawn mower robot", "inspection drone", "cleaning robot",
    "robotic arm", "greenhouse robot", "security patrol robot", "farm rover", "hospital cart",
    "camera drone", "underwater drone", "line-following robot", "telepresence robot", "pool cleaner",
    "window cleaning robot", "library robot", "kitchen assistant robot", "solar panel cleaner",
    "tour guide robot", "forklift robot", "snow plow robot", "sorting arm", "mapping rover",
]
DEVICES = [
    "Jetson Orin Nano", "Jetson AGX Orin", "Jetson Thor", "Orin NX board", "edge gateway",
    "camera node", "field computer", "vision module", "base station", "sensor hub", "control box",
    "rack server", "workstation", "robot computer", "dock computer",
]
PEOPLE = [
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Leo",
    "Maya", "Nils", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor", "Wei", "Xena",
    "Yusuf", "Zoe", "Anton", "Bea", "Carlos", "Dina", "Emil", "Fatima", "Gus", "Hana", "Ivan", "Jun",
    "Kofi", "Lena", "Marco", "Nora", "Oskar", "Paula", "Ravi", "Sofia", "Theo", "Vera", "Yara",
]
SENSORS = [
    "lidar", "depth camera", "IMU", "wheel encoder", "ultrasonic sensor", "thermal camera",
    "GPS receiver", "bump sensor", "microphone array", "humidity sensor", "barometer", "compass",
    "front camera", "rear camera", "cliff sensor", "gas sensor", "light sensor", "radar",
    "force sensor", "torque sensor", "rain sensor", "soil moisture probe",
]
SENSOR_STATES = [
    ("working normally", "ok"), ("returning noisy readings", "noisy"), ("not responding", "offline"),
    ("slightly out of calibration", "drift"), ("covered in dust", "dirty"), ("warming up", "starting"),
]
PLACES = [
    "kitchen", "hallway", "loading dock", "charging station", "front door", "garden", "greenhouse",
    "office", "lab", "storage room", "parking lot", "elevator", "lobby", "workshop", "roof",
    "server room", "north gate", "south field", "mail room", "cafeteria", "meeting room", "clinic",
    "back yard", "pantry", "garage", "library", "reception", "packing area", "cold room", "orchard",
]
LANDMARKS = [
    "the blue door", "the vending machine", "the big window", "the fire exit", "the plant shelf",
    "the water tank", "the red pillar", "the ramp", "the stairs", "the tool wall", "the old clock",
    "the sliding gate", "the notice board", "the fountain", "the bike rack", "the coffee machine",
]
COMPONENTS = [
    "CPU", "GPU", "battery pack", "motor driver", "left motor", "right motor", "power supply",
    "camera", "enclosure", "charger", "radio module", "memory chip", "fan controller", "arm joint",
]
TASKS = [
    "battery check", "sensor calibration", "firmware update", "floor cleaning", "patrol",
    "map update", "log upload", "model update", "backup", "inspection", "delivery run", "watering",
    "wheel check", "camera cleaning", "system reboot", "disk cleanup", "security scan", "inventory count",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
AI_MODELS = [
    "the chat model", "the vision model", "the speech model", "the object detector",
    "the planner network", "the depth model", "the tracking model", "the language model",
    "the segmentation model", "the pose model",
]
WEATHER = ["sunny", "rainy", "windy", "foggy", "cloudy", "snowy", "cold", "warm", "stormy", "calm"]
TIMES_OF_DAY = ["morning", "afternoon", "evening", "night", "dawn", "noon", "midnight"]
COLORS = ["red", "blue", "green", "yellow", "orange", "purple", "white", "black", "silver", "gray"]
OBJECTS = [
    "box", "ball", "cup", "key", "book", "lamp", "bottle", "glove", "hat", "letter", "toolbox",
    "plant pot", "blanket", "umbrella", "parcel", "basket", "bucket", "cable", "sock", "map",
    "apple", "teapot", "spoon", "chair", "ladder", "hammer", "wrench", "screwdriver", "helmet", "jacket",
    "scarf", "candle", "mirror", "clock", "radio", "kite", "drum", "guitar", "pencil", "notebook",
    "envelope", "bicycle", "wagon", "shovel", "rope", "flag", "coin", "ribbon", "feather", "stone",
    "shell", "leaf", "flower", "seed", "button", "marble", "puzzle", "blueprint", "sandwich", "pillow",
]
ADJECTIVES = [
    "small", "tiny", "huge", "shiny", "rusty", "quiet", "noisy", "brave", "clever", "gentle", "busy",
    "lazy", "bright", "dusty", "heavy", "old", "new", "wooden", "metal", "soft", "hard", "round",
    "striped", "spotted", "warm", "chilly", "smooth", "rough", "sleepy", "friendly", "careful", "patient",
    "sturdy", "fragile", "tall", "short", "wide", "narrow", "muddy", "clean", "sticky", "golden",
    "strange", "lucky", "hungry", "cheerful", "grumpy", "polite", "silly", "wobbly", "fluffy", "squeaky",
]
VERBS = [
    "rolled", "beeped", "blinked", "climbed", "carried", "lifted", "pushed", "pulled", "scanned",
    "measured", "counted", "painted", "fixed", "sorted", "swept", "watered", "opened", "closed",
    "followed", "guided", "searched", "dropped", "delivered", "repaired", "polished", "stacked", "folded",
    "wrapped", "weighed", "photographed", "inspected", "balanced", "collected", "hid", "spotted",
]
FOODS = [
    "bread", "milk", "eggs", "rice", "beans", "carrots", "tomatoes", "cheese", "butter", "pasta", "flour",
    "sugar", "salt", "tea", "coffee", "lemons", "onions", "potatoes", "peppers", "yogurt", "honey", "oats",
    "grapes", "pears", "cucumbers", "lentils", "noodles", "mushrooms", "spinach", "cherries", "plums",
]
ANIMALS = [
    ("cat", 4), ("dog", 4), ("bird", 2), ("spider", 8), ("ant", 6), ("horse", 4), ("duck", 2),
    ("beetle", 6), ("cow", 4), ("chicken", 2), ("goat", 4), ("bee", 6), ("octopus", 8), ("fish", 0),
    ("snake", 0), ("frog", 4), ("sheep", 4), ("crab", 10), ("owl", 2), ("mouse", 4),
]
OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("open", "closed"),
    ("full", "empty"), ("light", "dark"), ("early", "late"), ("left", "right"), ("high", "low"),
    ("old", "new"), ("wet", "dry"), ("loud", "quiet"), ("near", "far"), ("in", "out"),
    ("on", "off"), ("day", "night"), ("start", "stop"), ("push", "pull"), ("first", "last"),
]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]
FEELINGS = ["happy", "proud", "curious", "tired", "calm", "excited", "nervous", "relieved", "puzzled"]
SYSTEM_PROMPTS = [
    "You are a helpful assistant for the {robot} robot.",
    "You are {robot}, a friendly {kind}. Answer briefly.",
    "You help people operate robots and edge devices. Be concise and precise.",
    "You are an assistant running on a {device}. Keep answers short.",
    "You are a careful assistant. Give clear, correct answers.",
    "You are the voice of {robot}, a {kind} that works in the {place}.",
]

# ---------------------------------------------------------------------------------------------------------
# Small helpers


def a_an(word):
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def cap(text):
    return text[:1].upper() + text[1:]


def clock(r):
    return f"{r.randint(6, 21)}:{r.choice(['00', '15', '30', '45', '05', '20', '40', '50'])}"


def pick(r, items, k):
    return r.sample(items, k)


def fmt_num(x):
    return str(int(x)) if abs(x - round(x)) < 1e-9 else f"{x:.1f}"


def opener(r):
    return r.choice(["", "", "", "Sure. ", "Of course. ", "Okay. ", "Let me check. ", "Good question. ",
                     "Right. ", "Here is what I see. "])


def user_prefix(r):
    return r.choice(["", "", "", "Hi! ", "Hey, ", "Quick question: ", "Hello. ", "Excuse me, ",
                     "One more thing: ", "Can you help? "])


def ask(r, question):
    """A user's question with an optional greeting before it and courtesy after it."""
    pre = user_prefix(r)
    if pre.endswith(", ") and not question.startswith(tuple(ROBOTS)):
        question = question[:1].lower() + question[1:]
    return pre + question + user_suffix(r)


def plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def user_suffix(r):
    return r.choice(["", "", "", "", " Thanks.", " Thank you!", " Please.", " Quickly, please."])


# ---------------------------------------------------------------------------------------------------------
# Chat topics: each returns one (user, assistant) exchange about a context dict (robot, device, ...),
# with the numbers in the answer computed from the numbers in the question.


def topic_battery(r, c):
    robot = c["robot"]
    pct = r.randint(5, 100)
    watts = r.choice([20, 25, 30, 40, 50, 60, 80, 100, 120])
    capacity = r.choice([200, 300, 400, 500, 600, 800, 1000])
    hours = capacity * pct / 100 / watts
    user = ask(r, r.choice([
        f"What is the battery level of {robot}?", f"How much battery does {robot} have left?",
        f"Is {robot} running low on battery?", f"Check the battery on {robot}.",
        f"How long can {robot} keep going on its battery?",
    ]))
    low = pct < 20
    ans = opener(r) + r.choice([
        f"{robot} is at {pct} percent battery.", f"The battery of {robot} is at {pct} percent.",
        f"{robot} reports {pct} percent charge.",
    ])
    ans += " " + r.choice([
        f"Its pack holds {capacity} watt hours and it draws about {watts} watts, so it can run for about {fmt_num(hours)} more hours.",
        f"At the current draw of {watts} watts that is roughly {fmt_num(hours)} hours of work.",
        f"With a {capacity} watt hour pack and a load of {watts} watts, it has about {fmt_num(hours)} hours left.",
    ])
    if low:
        ans += " " + r.choice([
            "That is low. I suggest sending it to the charging station now.",
            "It should return to the dock soon to recharge.",
            "I will schedule a charge before the next task.",
        ])
    elif pct > 90:
        ans += " " + r.choice(["It is almost fully charged.", "The battery is nearly full."])
    return user, ans


def topic_sensor(r, c):
    robot = c["robot"]
    sensor = r.choice(SENSORS)
    state, code = r.choice(SENSOR_STATES)
    user = ask(r, r.choice([
        f"Is the {sensor} on {robot} working?", f"What is the status of the {sensor}?",
        f"Why does {robot} keep stopping? Is it the {sensor}?", f"Check the {sensor} on {robot}.",
        f"Run a quick test of the {sensor}.",
    ]))
    ans = opener(r) + f"The {sensor} on {robot} is {state}."
    advice = {
        "ok": [f"No action is needed.", f"The last {r.randint(2, 60)} readings were all within range."],
        "noisy": [f"Try cleaning the {sensor} and checking its cable.",
                  f"The noise started about {r.randint(2, 50)} minutes ago. A restart of the driver may help."],
        "offline": [f"Please check the cable and power to the {sensor}, then restart {robot}.",
                    f"I have switched {robot} to safe mode until the {sensor} is back."],
        "drift": [f"A calibration would fix this. It takes about {r.randint(2, 15)} minutes.",
                  f"The error is about {r.randint(1, 9)} percent. I recommend a calibration today."],
        "dirty": [f"Please wipe it with a soft dry cloth.", f"Cleaning it should restore full range."],
        "starting": [f"It will be ready in about {r.randint(5, 90)} seconds.", "Please wait a moment."],
    }[code]
    ans += " " + r.choice(advice)
    return user, ans


def topic_navigation(r, c):
    robot = c["robot"]
    src, dst = pick(r, PLACES, 2)
    dist = r.randint(5, 400)
    speed = r.choice([0.5, 1.0, 1.5, 2.0, 2.5])
    minutes = dist / speed / 60
    landmark = r.choice(LANDMARKS)
    user = ask(r, r.choice([
        f"Send {robot} to the {dst}.", f"Can {robot} go to the {dst}?", f"Take {robot} to the {dst}, please.",
        f"How long will it take {robot} to reach the {dst}?", f"Navigate to the {dst}.",
    ]))
    ans = opener(r) + r.choice([
        f"Planning a route from the {src} to the {dst}.",
        f"{robot} is leaving the {src} for the {dst}.",
        f"Route found from the {src} to the {dst}.",
    ])
    ans += " " + r.choice([
        f"The path is {dist} meters long and passes {landmark}.",
        f"It is {dist} meters, going past {landmark}.",
    ])
    ans += " " + r.choice([
        f"At {fmt_num(speed)} meters per second it will take about {fmt_num(minutes)} minutes.",
        f"Estimated time: {fmt_num(minutes)} minutes at {fmt_num(speed)} meters per second.",
    ])
    if r.random() < 0.3:
        ans += " " + r.choice([
            f"The {r.choice(PLACES)} is blocked, so it will take the long way.",
            "I will tell you when it arrives.", "The floor near the door is wet, so it will slow down there.",
        ])
    return user, ans


def topic_gpu(r, c):
    device = c["device"]
    total = r.choice([8, 16, 32, 64, 128])
    used = r.randint(1, total - 1)
    model = r.choice(AI_MODELS)
    util = r.randint(0, 100)
    kind = r.randint(0, 2)
    if kind == 0:
        user = ask(r, r.choice([
            f"How much GPU memory is free on the {device}?", f"Is there enough memory on the {device}?",
            f"What is using the GPU memory on the {device}?",
        ]))
        ans = opener(r) + (f"The {device} has {total} GB of memory. {cap(model)} uses {used} GB, "
                           f"so {total - used} GB is free.")
        if total - used < 2:
            ans += " " + r.choice(["That is tight. A smaller model or a shorter context would help.",
                                   "Consider a quantized model to free some memory."])
    elif kind == 1:
        user = ask(r, r.choice([
            f"How busy is the GPU on the {device}?", f"What is the GPU load right now?",
            f"Is {model} slowing down the {device}?",
        ]))
        ans = opener(r) + f"The GPU on the {device} is at {util} percent load, mostly from {model}."
        ans += " " + (r.choice(["It has plenty of room for more work.", "It is mostly idle."]) if util < 40 else
                      r.choice(["It is fairly busy but stable.", "New jobs may have to wait a little."]) if util < 85
                      else r.choice(["It is nearly full. New jobs will be slow.",
                                     "It is at its limit, so I would not start another model now."]))
    else:
        tps = r.randint(5, 400)
        n = r.choice([50, 100, 200, 300, 500, 1000])
        user = ask(r, r.choice([
            f"How fast does {model} run on the {device}?", f"How many tokens per second do we get on the {device}?",
            f"How long would {n} tokens take on the {device}?",
        ]))
        ans = opener(r) + (f"{cap(model)} generates about {tps} tokens per second on the {device}, so "
                           f"{n} tokens take about {fmt_num(n / tps)} seconds.")
    return user, ans


def topic_temperature(r, c):
    robot = c["robot"]
    comp = r.choice(COMPONENTS)
    limit = r.choice([60, 70, 75, 80, 85, 90, 95])
    temp = r.randint(20, 105)
    user = ask(r, r.choice([
        f"How hot is the {comp}?", f"What is the temperature of the {comp} on {robot}?",
        f"Is the {comp} overheating?", f"Check the {comp} temperature.",
    ]))
    ans = opener(r) + f"The {comp} is at {temp} degrees Celsius. The limit is {limit} degrees."
    if temp > limit:
        ans += " " + r.choice([
            f"That is {temp - limit} degrees over the limit, so I am reducing the load.",
            f"It is {temp - limit} degrees too hot. {robot} will pause for a few minutes to cool down.",
            f"It is overheating by {temp - limit} degrees. Please check the fan.",
        ])
    else:
        ans += " " + r.choice([
            f"That leaves {limit - temp} degrees of headroom.", "It is within the safe range.",
            f"It is {limit - temp} degrees below the limit, which is fine.",
        ])
    return user, ans


def topic_schedule(r, c):
    robot = c["robot"]
    task = r.choice(TASKS)
    day = r.choice(DAYS + ["tomorrow", "today"])
    t = clock(r)
    mins = r.choice([5, 10, 15, 30])
    user = ask(r, r.choice([
        f"Schedule a {task} for {day} at {t}.", f"Can you plan a {task} on {day} at {t}?",
        f"Please add a {task} for {robot} {'on ' if day in DAYS else ''}{day} at {t}.",
        f"Remind me to do the {task} {'on ' if day in DAYS else ''}{day} at {t}.",
    ]))
    when = f"{'on ' if day in DAYS else ''}{day} at {t}"
    ans = opener(r) + r.choice([
        f"Done. The {task} is scheduled {when}.", f"I added a {task} {when}.",
        f"The {task} is now on the calendar {when}.",
    ])
    ans += " " + r.choice([
        f"I will remind you {mins} minutes before.", f"It should take about {r.randint(5, 90)} minutes.",
        f"{robot} will be ready for it.", "", f"Nothing else is planned at that time.",
    ])
    return user, ans.strip()


def topic_status(r, c):
    robot, kind = c["robot"], c["kind"]
    pct = r.randint(10, 100)
    place = r.choice(PLACES)
    task = r.choice(TASKS)
    user = ask(r, r.choice([
        f"What is {robot} doing right now?", f"Give me a status report for {robot}.",
        f"Where is {robot}?", "Status?", f"How is {robot} doing?",
    ]))
    ans = opener(r) + r.choice([
        f"{robot} is in the {place}, working on the {task}.", f"{robot} is in the {place} and is idle.",
        f"{robot}, the {kind}, is on its way to the {place}.",
    ])
    ans += f" Battery: {pct} percent. " + r.choice([
        "All systems are normal.", f"The {r.choice(SENSORS)} needs a calibration soon.",
        f"It has finished {r.randint(1, 20)} tasks today.", "No errors in the last hour.",
    ])
    return user, ans


def topic_update(r, c):
    robot = c["robot"]
    major, minor, patch = r.randint(1, 5), r.randint(0, 20), r.randint(0, 9)
    size = r.randint(20, 900)
    speed = r.choice([2, 5, 10, 20, 50])
    user = ask(r, r.choice([
        f"Is there a firmware update for {robot}?", "Update the software, please.",
        f"Which version is {robot} running?",
    ]))
    ans = opener(r) + (f"{robot} runs version {major}.{minor}.{patch}. Version {major}.{minor + 1}.0 is available, "
                       f"a {size} MB download. At {speed} MB per second that takes about "
                       f"{fmt_num(size / speed)} seconds.")
    ans += " " + r.choice(["Shall I install it tonight?", "I will install it when it is docked.",
                           "The robot must stay on the charger during the update."])
    return user, ans


def topic_network(r, c):
    device = c["device"]
    sig = r.randint(-90, -30)
    ping = r.randint(1, 300)
    user = ask(r, r.choice([
        f"How is the network on the {device}?", "Is the connection stable?", "Why is the video lagging?",
    ]))
    quality = "strong" if sig > -60 else "fair" if sig > -75 else "weak"
    ans = opener(r) + (f"The {device} has a {quality} signal at {sig} dBm, and the ping to the server is "
                       f"{ping} milliseconds.")
    if quality == "weak" or ping > 150:
        ans += " " + r.choice(["Moving closer to the access point would help.",
                               "Video will be reduced to low quality until the link improves."])
    return user, ans


def topic_payload(r, c):
    robot = c["robot"]
    cap_kg = r.choice([5, 10, 20, 50, 100, 200])
    n = r.randint(1, 12)
    each = r.randint(1, 25)
    total = n * each
    user = ask(r, r.choice([
        f"Can {robot} carry {plural(n, 'box').replace('boxs', 'boxes')} of {plural(each, 'kilogram')} each?",
        f"Is {n} times {plural(each, 'kilogram')} too heavy for {robot}?",
    ]))
    ans = opener(r) + f"{plural(n, 'box').replace('boxs', 'boxes')} of {plural(each, 'kilogram')} weigh{'s' if n == 1 else ''} {plural(total, 'kilogram')}. {robot} can carry {cap_kg} kilograms, "
    if total <= cap_kg:
        ans += r.choice(["so that is fine.", f"so it has {plural(cap_kg - total, 'kilogram')} to spare."])
    else:
        trips = -(-total // cap_kg)
        ans += f"so it is too heavy. It would need {trips} trips."
    return user, ans


def topic_error(r, c):
    robot = c["robot"]
    code = r.randint(100, 999)
    sensor = r.choice(SENSORS)
    comp = r.choice(COMPONENTS)
    causes = [
        (f"the {sensor} lost its connection", f"Reconnect the {sensor} cable and restart the driver."),
        (f"the {comp} reported a fault", f"Power cycle {robot}. If it comes back, replace the {comp}."),
        ("the map does not match the room", "Run a map update, then try again."),
        ("a wheel is stuck", "Check the wheels for hair or string and clean them."),
        ("the disk is almost full", "Upload the logs and run a disk cleanup."),
    ]
    cause, fix = r.choice(causes)
    user = ask(r, r.choice([
        f"{robot} shows error {code}. What does it mean?", f"What is error {code}?",
        f"Help, error {code} on {robot}!",
    ]))
    ans = opener(r) + f"Error {code} means that {cause}. {fix}"
    return user, ans


def topic_inventory(r, c):
    robot = c["robot"]
    obj = r.choice(OBJECTS)
    place = r.choice(PLACES)
    n, k = r.randint(0, 60), r.randint(1, 20)
    pl = plural_word(obj)
    user = ask(r, r.choice([f"How many {pl} are in the {place}?", f"Count the {pl} in the {place}.",
                            f"Can {robot} count the {pl} in the {place}?"]))
    ans = opener(r) + (f"{robot} counted {n} {obj if n == 1 else pl} in the {place}."
                       if n else f"{robot} found no {pl} in the {place}.")
    if r.random() < 0.5:
        ans += f" If we add {k} more, there will be {n + k}."
    return user, ans


def topic_shopping(r, c):
    foods = r.sample(FOODS, r.randint(2, 5))
    user = ask(r, r.choice(["What is on the shopping list?", "What do we need to buy?", "Read me the list."]))
    ans = opener(r) + "The list has " + ", ".join(foods[:-1]) + " and " + foods[-1] + "."
    return user, ans


CHAT_TOPICS = [topic_inventory, topic_shopping, topic_battery, topic_sensor, topic_navigation, topic_gpu, topic_temperature, topic_schedule,
               topic_status, topic_update, topic_network, topic_payload, topic_error]

FOLLOWUPS = [
    ("Thanks!", ["You are welcome.", "Happy to help.", "Anytime.", "Glad I could help."]),
    ("Okay, do it.", ["Done.", "It is done.", "Starting now.", "Okay, it is on its way."]),
    ("Never mind.", ["Okay, I will leave it as it is.", "No problem."]),
    ("Can you repeat that?", None),
]


def chat_dialogue(r):
    c = {"robot": r.choice(ROBOTS), "kind": r.choice(ROBOT_KINDS), "device": r.choice(DEVICES),
         "place": r.choice(PLACES)}
    messages = []
    if r.random() < 0.35:
        messages.append({"role": "system", "content": r.choice(SYSTEM_PROMPTS).format(**c)})
    turns = r.choice([1, 1, 1, 2, 2, 3])
    last_answer = None
    for i in range(turns):
        if i > 0 and r.random() < 0.3:
            q, answers = r.choice(FOLLOWUPS)
            a = last_answer if answers is None else r.choice(answers)
        else:
            q, a = r.choice(CHAT_TOPICS)(r, c)
        messages.append({"role": "user", "content": q})
        messages.append({"role": "assistant", "content": a})
        last_answer = a
    return messages


# ---------------------------------------------------------------------------------------------------------
# Facts and arithmetic


def qa_arith(r):
    op = r.choice(["plus", "minus", "times", "plus", "minus"])
    top = 20 if r.random() < 0.6 else 99
    a, b = r.randint(0, top), r.randint(0, top)
    if op == "times":
        a, b = r.randint(0, 12), r.randint(0, 12)
        res = a * b
    elif op == "minus":
        a, b = max(a, b), min(a, b)
        res = a - b
    else:
        res = a + b
    sym = {"plus": "+", "minus": "-", "times": "*"}[op]
    q = r.choice([f"What is {a} {op} {b}?", f"What is {a} {sym} {b}?", f"Compute {a} {sym} {b}.",
                  f"How much is {a} {op} {b}?"])
    ans = r.choice([f"{a} {op} {b} is {res}.", f"{a} {sym} {b} = {res}.", f"The answer is {res}.", f"{res}."])
    return q, ans


def qa_compare(r):
    a, b = r.sample(range(0, 100), 2)
    word = r.choice(["larger", "smaller", "bigger"])
    q = f"Which is {word}, {a} or {b}?"
    res = max(a, b) if word != "smaller" else min(a, b)
    return q, r.choice([f"{res} is {word}.", f"{res}.", f"The {word} number is {res}."])


def qa_count(r):
    a = r.randint(0, 15)
    b = a + r.randint(2, 7)
    q = r.choice([f"Count from {a} to {b}.", f"List the numbers from {a} to {b}."])
    return q, ", ".join(str(i) for i in range(a, b + 1)) + "."


def qa_days(r):
    i = r.randint(0, 6)
    k = r.randint(1, 3)
    if k == 1:
        q = r.choice([f"What day comes after {DAYS[i]}?", f"Which day follows {DAYS[i]}?"])
        return q, f"{DAYS[(i + 1) % 7]} comes after {DAYS[i]}."
    q = f"If today is {DAYS[i]}, what day is it in {k} days?"
    return q, f"In {k} days it will be {DAYS[(i + k) % 7]}."


def qa_months(r):
    i = r.randint(0, 11)
    if r.random() < 0.5:
        return f"What month comes after {MONTHS[i]}?", f"{MONTHS[(i + 1) % 12]} comes after {MONTHS[i]}."
    return f"What month comes before {MONTHS[i]}?", f"{MONTHS[(i - 1) % 12]} comes before {MONTHS[i]}."


def qa_units(r):
    k = r.randint(0, 4)
    if k == 0:
        h = r.randint(1, 12)
        return f"How many minutes are in {h} hours?", f"There are {h * 60} minutes in {h} hours."
    if k == 1:
        m = r.choice([60, 120, 180, 240, 300, 90, 150, 30, 45])
        return f"How many hours is {m} minutes?", f"{m} minutes is {fmt_num(m / 60)} hours."
    if k == 2:
        km = r.randint(1, 20)
        return f"How many meters are in {km} kilometers?", f"{km} kilometers is {km * 1000} meters."
    if k == 3:
        p = r.choice([10, 20, 25, 50, 75])
        n = r.choice([20, 40, 80, 100, 200, 400])
        return f"What is {p} percent of {n}?", f"{p} percent of {n} is {fmt_num(p * n / 100)}."
    s = r.randint(1, 10)
    return f"How many seconds are in {s} minutes?", f"There are {s * 60} seconds in {s} minutes."


def qa_animals(r):
    animal, legs = r.choice(ANIMALS)
    if legs == 0:
        return f"How many legs does a {animal} have?", f"A {animal} has no legs."
    return f"How many legs does a {animal} have?", r.choice(
        [f"A {animal} has {legs} legs.", f"{cap(NUMBER_WORDS[legs] if legs <= 12 else str(legs))}."])


def qa_opposite(r):
    a, b = r.choice(OPPOSITES)
    if r.random() < 0.5:
        a, b = b, a
    return f"What is the opposite of {a}?", r.choice([f"The opposite of {a} is {b}.", f"{cap(b)}."])


def qa_parity(r):
    n = r.randint(0, 99)
    return f"Is {n} even or odd?", f"{n} is {'even' if n % 2 == 0 else 'odd'}."


def qa_words(r):
    n = r.randint(0, 12)
    if r.random() < 0.5:
        return f"Write the number {n} in words.", f"{n} is written as {NUMBER_WORDS[n]}."
    return f"What number is {NUMBER_WORDS[n]}?", f"{cap(NUMBER_WORDS[n])} is {n}."


GENERAL_FACTS = [
    ("How many days are in a week?", "There are seven days in a week."),
    ("How many hours are in a day?", "A day has 24 hours."),
    ("How many months are in a year?", "A year has 12 months."),
    ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What color is grass?", "Grass is green."),
    ("What do plants need to grow?", "Plants need water, light and air to grow."),
    ("What does a battery store?", "A battery stores electrical energy."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("What does a lidar measure?", "A lidar measures distance with pulses of laser light."),
    ("What does an IMU measure?", "An IMU measures acceleration and rotation."),
    ("What does a GPU do?", "A GPU runs many simple calculations in parallel, which makes it fast for graphics and neural networks."),
    ("What is a robot?", "A robot is a machine that can sense, decide and act on its own."),
    ("At what temperature does water freeze?", "Water freezes at 0 degrees Celsius."),
    ("At what temperature does water boil?", "At sea level, water boils at 100 degrees Celsius."),
    ("What is the freezing point of water in Celsius?", "Zero degrees."),
    ("Which is heavier, a kilogram of feathers or a kilogram of stones?", "They weigh the same: one kilogram each."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many sides does a square have?", "A square has four sides."),
    ("How many corners does a cube have?", "A cube has eight corners."),
    ("What is the first letter of the alphabet?", "The first letter is A."),
    ("What comes after the letter B?", "C comes after B."),
    ("What is a kilobyte?", "A kilobyte is 1000 bytes."),
    ("How many bits are in a byte?", "A byte has eight bits."),
    ("What does RAM stand for?", "RAM stands for random access memory."),
    ("What does CPU stand for?", "CPU stands for central processing unit."),
    ("What does GPU stand for?", "GPU stands for graphics processing unit."),
    ("Where does the sun rise?", "The sun rises in the east."),
    ("Where does the sun set?", "The sun sets in the west."),
    ("What do bees make?", "Bees make honey."),
    ("What is ice made of?", "Ice is frozen water."),
]


def qa_general(r):
    return r.choice(GENERAL_FACTS)


QA_FUNCS = [qa_arith, qa_arith, qa_compare, qa_count, qa_days, qa_months, qa_units, qa_animals,
            qa_opposite, qa_parity, qa_words, qa_general, qa_general]

# ---------------------------------------------------------------------------------------------------------
# Instructions and explanations

HOWTO = {
    "calibrate the {sensor}": [
        "Park {robot} on a flat, open floor.", "Open the settings menu and choose sensors.",
        "Select the {sensor} and press calibrate.", "Keep {robot} still for about {n} seconds.",
        "Wait for the green light, then save the result.",
    ],
    "charge {robot}": [
        "Send {robot} to the charging station.", "Check that the contacts are clean.",
        "Wait until the light on the dock turns green.", "A full charge takes about {n} minutes.",
    ],
    "update the firmware on {robot}": [
        "Put {robot} on the charger.", "Connect it to the network.", "Open the update page and press install.",
        "Do not turn it off until it restarts.", "Check the version number when it is back.",
    ],
    "clean the {sensor}": [
        "Turn {robot} off.", "Wipe the {sensor} with a soft dry cloth.", "Do not use water or soap.",
        "Turn {robot} back on and run a short test.",
    ],
    "make a map of the {place}": [
        "Clear the floor of the {place}.", "Start {robot} in mapping mode.",
        "Drive it slowly along every wall.", "Return to the start point to close the loop.",
        "Save the map and give it a name.",
    ],
    "cool down the {device}": [
        "Check that the fan is spinning.", "Move the {device} away from walls and heat sources.",
        "Lower the power mode.", "Stop jobs that are not needed.",
    ],
    "free memory on the {device}": [
        "List the running models.", "Stop any model that is not needed.",
        "Use a quantized model, which takes about half the memory.", "Shorten the context length.",
    ],
    "set up a new {device}": [
        "Connect power and a network cable.", "Flash the latest system image.",
        "Create a user account.", "Install the drivers and run a test job.",
    ],
    "replace a wheel on {robot}": [
        "Turn {robot} off and lift it onto a stand.", "Remove the {n} screws that hold the wheel.",
        "Pull the old wheel off and push the new one on.", "Tighten the screws and test the motor.",
    ],
    "plan a delivery to the {place}": [
        "Load the parcel into {robot}.", "Choose the {place} as the destination.",
        "Check the battery; it should be above {n} percent.", "Press start and watch the first turn.",
    ],
}

EXPLAIN = {
    "quantization": [
        "Quantization stores the weights of a model with fewer bits.",
        "Instead of 16 bits per weight, a quantized model may use 8 or 4 bits.",
        "This makes the model smaller and often faster, because less memory has to be read.",
        "The cost is a small loss of accuracy.",
    ],
    "speculative decoding": [
        "Speculative decoding uses a small draft model to guess the next few tokens.",
        "The large model then checks all the guesses in one pass.",
        "Every correct guess saves one slow step of the large model.",
        "The output is the same as without speculation.",
    ],
    "a KV cache": [
        "A KV cache keeps the keys and values of earlier tokens in memory.",
        "With it, the model does not have to recompute the whole text for each new token.",
        "It grows with the length of the context, so long chats need more memory.",
    ],
    "batching": [
        "Batching runs many requests through the model at the same time.",
        "The weights are read once for the whole batch, so the GPU does more useful work.",
        "It raises throughput, but each request may wait a little longer.",
    ],
    "a PID controller": [
        "A PID controller corrects an error between a target and a measured value.",
        "It adds three parts: one for the current error, one for the past error and one for the trend.",
        "Robots use it to hold a speed, a heading or a temperature.",
    ],
    "odometry": [
        "Odometry estimates how far a robot has moved from its wheel turns.",
        "It is quick but it drifts over time, because small errors add up.",
        "Robots correct it with a lidar, a camera or GPS.",
    ],
    "thermal throttling": [
        "Thermal throttling lowers the clock speed of a chip when it gets too hot.",
        "It protects the hardware, but the device becomes slower.",
        "Better cooling or a lower power mode can prevent it.",
    ],
    "a watchdog timer": [
        "A watchdog timer restarts a system that stops responding.",
        "The software must reset the timer regularly.",
        "If it does not, the watchdog assumes a crash and reboots the device.",
    ],
    "a lidar": [
        "A lidar sends out short pulses of laser light.",
        "It measures how long each pulse takes to come back.",
        "From that time it computes the distance to walls and objects around the robot.",
    ],
    "a token": [
        "A token is a small piece of text, such as a word or part of a word.",
        "Language models read and write text one token at a time.",
        "Speed is often measured in tokens per second.",
    ],
}


def instruction(r):
    c = {"robot": r.choice(ROBOTS), "sensor": r.choice(SENSORS), "place": r.choice(PLACES),
         "device": r.choice(DEVICES), "n": r.choice([10, 15, 20, 30, 45, 60, 90, 120])}
    if r.random() < 0.6:
        key = r.choice(sorted(HOWTO))
        task = key.format(**c)
        q = r.choice([f"How do I {task}?", f"What are the steps to {task}?", f"Explain how to {task}.",
                      f"Tell me how to {task}."])
        steps = [s.format(**c) for s in HOWTO[key]]
        style = r.randint(0, 2)
        if style == 0:
            a = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps))
        elif style == 1:
            a = f"To {task}:\n" + "\n".join(f"- {s}" for s in steps)
        else:
            a = " ".join(["First, " + steps[0][0].lower() + steps[0][1:]] +
                         ["Then " + s[0].lower() + s[1:] for s in steps[1:-1]] +
                         ["Finally, " + steps[-1][0].lower() + steps[-1][1:]])
        return q, a
    key = r.choice(sorted(EXPLAIN))
    q = r.choice([f"What is {key}?", f"Explain {key}.", f"Can you explain {key} in simple words?",
                  f"How does {key} work?"])
    sents = EXPLAIN[key]
    n = r.randint(2, len(sents))
    return q, " ".join(sents[:n])


# ---------------------------------------------------------------------------------------------------------
# Plain-text documents


def story(r, robot=None, place=None):
    """A short story; robot / place fix the hero and the setting (a story asked for by name)."""
    person = r.choice(PEOPLE)
    fixed_place = place is not None
    robot = robot or r.choice(ROBOTS)
    kind = r.choice(ROBOT_KINDS)
    if place is None:
        place, place2 = pick(r, PLACES, 2)
    else:
        place2 = r.choice([p for p in PLACES if p != place])
    obj = r.choice(OBJECTS)
    color = r.choice(COLORS)
    weather = r.choice(WEATHER)
    tod = r.choice(TIMES_OF_DAY)
    feel, feel2 = pick(r, FEELINGS, 2)
    sensor = r.choice(SENSORS)
    openings = [
        f"Once upon a time, there was {a_an(kind)} named {robot}.",
        f"It was a {weather} {tod} in the {place}.",
        f"{person} had {a_an(kind)} called {robot}.",
        f"Every {tod}, {robot} the {kind} rolled out of the {place}.",
        f"In a small town there lived {a_an(kind)} named {robot} and its friend {person}.",
    ]
    middles = [
        f"One day, {person} lost {a_an(color + ' ' + obj)}.",
        f"{robot} used its {sensor} to look around the {place}.",
        f"The {weather} weather made the work hard, but {robot} did not stop.",
        f"{person} asked {robot} to bring the {obj} to the {place2}.",
        f"Suddenly, the lights went out and the {place} was dark.",
        f"{robot} found {a_an(color + ' ' + obj)} under a table near the {place2}.",
        f"Its battery was low, so it went back to the charging station first.",
        f"{person} felt {feel} and called {robot} for help.",
        f"{robot} counted {r.randint(2, 12)} {obj}es on the shelf." if obj.endswith(("x", "s", "sh", "ch")) else
        f"{robot} counted {r.randint(2, 12)} {obj}s on the shelf.",
        f"A {r.choice(ANIMALS)[0]} was sitting in the way, so {robot} waited quietly.",
        f"The path to the {place2} was blocked, so {robot} found another way.",
        f"{robot} {r.choice(VERBS)} the {r.choice(ADJECTIVES)} {r.choice(OBJECTS)} and {r.choice(VERBS)} it again.",
        f"The {r.choice(ADJECTIVES)} {obj} looked {r.choice(ADJECTIVES)} in the {tod} light.",
        f"{person} {r.choice(VERBS)} {a_an(r.choice(ADJECTIVES) + ' ' + r.choice(OBJECTS))} while {robot} {r.choice(VERBS)} the {obj}.",
        f"Near {r.choice(LANDMARKS)}, {robot} met {a_an(r.choice(ADJECTIVES) + ' ' + r.choice(ANIMALS)[0])}.",
    ]
    endings = [
        f"In the end, {person} was {feel2}, and {robot} went back to the {place}.",
        f"From that day on, {person} and {robot} were good friends.",
        f"{person} smiled and said, \"Thank you, {robot}.\"",
        f"That night, {robot} charged its battery and dreamed of the {place2}.",
        f"The {obj} was back where it belonged, and everyone was {feel2}.",
    ]
    k = r.randint(2, 4)
    opening = openings[1] if fixed_place else r.choice(openings)
    parts = [opening] + r.sample(middles, k) + [r.choice(endings)]
    if r.random() < 0.5:
        title = r.choice([f"{robot} and the {cap(obj)}", f"A {cap(weather)} {cap(tod)}", f"{person}'s Robot",
                          f"The {cap(kind)}"])
        return title + "\n\n" + " ".join(parts)
    return " ".join(parts)


def device_log(r):
    robot = r.choice(ROBOTS)
    h, m, s = r.randint(0, 23), r.randint(0, 59), r.randint(0, 59)
    batt = r.randint(20, 100)
    temp = r.randint(30, 70)
    lines = []
    for _ in range(r.randint(3, 8)):
        s += r.randint(1, 40)
        m += s // 60
        s %= 60
        h = (h + m // 60) % 24
        m %= 60
        ev = r.randint(0, 5)
        if ev == 0:
            batt = max(0, batt - r.randint(0, 3))
            msg = f"battery={batt}% temp={temp}C"
        elif ev == 1:
            msg = f"arrived at {r.choice(PLACES)}"
        elif ev == 2:
            msg = f"{r.choice(SENSORS)} status={r.choice(SENSOR_STATES)[1]}"
        elif ev == 3:
            temp += r.randint(-2, 4)
            msg = f"{r.choice(COMPONENTS).lower()} temp={temp}C"
        elif ev == 4:
            msg = f"task {r.choice(TASKS)} {r.choice(['started', 'done', 'queued', 'failed'])}"
        else:
            msg = f"gpu util={r.randint(0, 100)}% mem={r.randint(1, 15)}.{r.randint(0, 9)}GB"
        lines.append(f"[{h:02d}:{m:02d}:{s:02d}] {robot}: {msg}")
    return "\n".join(lines)


def manual_paragraph(r):
    robot = r.choice(ROBOTS)
    kind = r.choice(ROBOT_KINDS)
    device = r.choice(DEVICES)
    s1, s2 = pick(r, SENSORS, 2)
    sents = [
        f"{robot} is {a_an(kind)}.",
        f"It runs on {a_an(device)} and uses {a_an(s1)} and {a_an(s2)} to sense the world.",
        f"Its battery lasts about {r.randint(2, 12)} hours and charges in {r.randint(1, 4)} hours.",
        f"It moves at up to {fmt_num(r.choice([0.5, 1.0, 1.5, 2.0]))} meters per second.",
        f"It can carry up to {r.choice([5, 10, 20, 50])} kilograms.",
        f"Keep the {s1} clean for the best results.",
        f"Do not use it in {r.choice(['heavy rain', 'deep snow', 'direct heat', 'dusty rooms'])}.",
    ]
    n = r.randint(3, len(sents))
    return " ".join([sents[0]] + r.sample(sents[1:], n - 1))


def qa_text(r):
    lines = []
    for _ in range(r.randint(2, 5)):
        f = r.choice(QA_FUNCS + [instruction])
        q, a = f(r)
        lines.append(f"Q: {q}\nA: {a}")
    return "\n\n".join(lines)


def arithmetic_sheet(r):
    rows = []
    for _ in range(r.randint(4, 10)):
        a, b = r.randint(0, 20), r.randint(0, 20)
        op = r.choice(["+", "-", "*"])
        if op == "-":
            a, b = max(a, b), min(a, b)
        if op == "*":
            a, b = r.randint(0, 12), r.randint(0, 12)
        rows.append(f"{a} {op} {b} = {eval(f'{a} {op} {b}')}")
    return "\n".join(rows)


def plural_word(word):
    if word.endswith(("s", "x", "sh", "ch")):
        return word + "es"
    if word.endswith("f"):
        return word[:-1] + "ves"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def inventory(r):
    place = r.choice(PLACES)
    items = r.sample(OBJECTS, r.randint(3, 7))
    lines = [r.choice([f"Inventory of the {place}:", f"Items in the {place}:", f"Stock list, {place}:"])]
    for it in items:
        n = r.randint(1, 40)
        lines.append(f"- {n} {it if n == 1 else plural_word(it)} ({r.choice(ADJECTIVES)})")
    return "\n".join(lines)


def shopping(r):
    person = r.choice(PEOPLE)
    foods = r.sample(FOODS, r.randint(3, 8))
    head = r.choice([f"{person}'s shopping list:", "Shopping list:", f"Things to buy for the {r.choice(PLACES)}:"])
    return head + "\n" + "\n".join(f"{i + 1}. {f}" for i, f in enumerate(foods))


TEXT_KINDS = [(story, 5), (device_log, 2), (manual_paragraph, 2), (qa_text, 2), (arithmetic_sheet, 1),
              (inventory, 1), (shopping, 1)]


def chat_qa(r, f):
    q, a = f(r)
    messages = []
    if r.random() < 0.2:
        messages.append({"role": "system", "content": r.choice(SYSTEM_PROMPTS).format(
            robot=r.choice(ROBOTS), kind=r.choice(ROBOT_KINDS), device=r.choice(DEVICES), place=r.choice(PLACES))})
    messages += [{"role": "user", "content": ask(r, q) if r.random() < 0.5 else q}, {"role": "assistant", "content": a}]
    return messages


def story_request(r):
    robot, place = r.choice(ROBOTS), r.choice(PLACES)
    rr = random.Random(r.getrandbits(32))
    k = r.randint(0, 3)
    if k == 0:
        q, text = f"Tell me a short story about a robot named {robot}.", story(rr, robot=robot)
    elif k == 1:
        q, text = f"Write a short story that takes place in the {place}.", story(rr, place=place)
    else:
        q, text = r.choice(["Tell me a short story.", "Can you tell me a bedtime story?"]), story(rr)
    return [{"role": "user", "content": q}, {"role": "assistant", "content": text}]


# ---------------------------------------------------------------------------------------------------------
# Samples


def sample(r):
    """One sample: {"kind": "chat", "messages": [...]} or {"kind": "text", "text": ...}."""
    x = r.random()
    if x < 0.30:
        return {"kind": "chat", "messages": chat_dialogue(r)}
    if x < 0.42:
        return {"kind": "chat", "messages": chat_qa(r, r.choice(QA_FUNCS))}
    if x < 0.52:
        return {"kind": "chat", "messages": chat_qa(r, instruction)}
    if x < 0.57:
        return {"kind": "chat", "messages": story_request(r)}
    funcs, weights = zip(*TEXT_KINDS)
    return {"kind": "text", "text": r.choices(funcs, weights)[0](r)}


# The streams the default models were trained and evaluated on (train_all.py, heldout_text.py).
TRAIN_CORPUS_SEED = 1
HELDOUT_CORPUS_SEED = 2


def generate(seed, count):
    r = random.Random(seed)
    return [sample(r) for _ in range(count)]


def generate_shards(seed, count, shards, processes=None):
    """count samples split into `shards` independent streams (seed, i): the result depends on the seed,
    count and shard count only, not on how many processes make it."""
    per = [count // shards + (1 if i < count % shards else 0) for i in range(shards)]
    args = [(seed * 1_000_003 + i, n) for i, n in enumerate(per)]
    if processes == 1:
        parts = [generate(*a) for a in args]
    else:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.starmap(generate, args)
    return [s for part in parts for s in part]


def sample_key(s):
    """A hashable identity of a sample (for keeping held-out samples out of the training set)."""
    if s["kind"] == "chat":
        return tuple((m["role"], m["content"]) for m in s["messages"])
    return s["text"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--out", help="write JSON lines here")
    ap.add_argument("--show", action="store_true", help="print the samples readably")
    args = ap.parse_args()
    samples = generate(args.seed, args.count)
    if args.out:
        with open(args.out, "w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
    if args.show or not args.out:
        for s in samples:
            print("=" * 60)
            if s["kind"] == "text":
                print(s["text"])
            else:
                for m in s["messages"]:
                    print(f"[{m['role']}] {m['content']}")


if __name__ == "__main__":
    main()
