"""A small fixed corpus for the ranking-quality test: short pages on distinct topics (some sharing a name:
Python, Java, Mercury, Apple) and queries, each with the one page that answers it."""

from __future__ import annotations

PAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "python-language": ("Python (programming language)", (
        "Python is a high-level, general-purpose programming language created by Guido van Rossum and "
        "first released in 1991. Its design philosophy emphasizes code readability.",
        "Python uses significant indentation: blocks of code are delimited by whitespace rather than "
        "curly braces or keywords, so the layout of a program is part of its syntax.",
        "It is dynamically typed and garbage-collected, and ships with a large standard library, which is"
        " why it is often described as a batteries-included language.",
    )),
    "python-snake": ("Pythons (snakes)", (
        "Pythons are a family of nonvenomous snakes found in Africa, Asia and Australia. The reticulated "
        "python is among the longest snakes in the world and can exceed six metres.",
        "Pythons are constrictors: they seize prey with their backward-curving teeth, coil around it and "
        "squeeze a little tighter each time the animal breathes out, until its circulation stops.",
        "Females lay clutches of eggs and coil around them, shivering their muscles to keep the eggs "
        "warm.",
    )),
    "java-island": ("Java (island)", (
        "Java is an island of Indonesia, bordered by the Indian Ocean to the south and the Java Sea to "
        "the north. With more than 150 million inhabitants it is the most populous island on Earth.",
        "The capital Jakarta lies on its northwestern coast. The island is volcanic, and its rich soils "
        "support rice terraces, tea and coffee plantations.",
    )),
    "java-language": ("Java (programming language)", (
        "Java is a class-based, object-oriented programming language released by Sun Microsystems in 1995"
        " and now developed by Oracle.",
        "Java source code is compiled to bytecode that runs on the Java Virtual Machine, so the same "
        "compiled program runs on any operating system with a JVM: write once, run anywhere.",
        "Memory is managed by a garbage collector, and the language is widely used for Android apps and "
        "enterprise servers.",
    )),
    "mercury-planet": ("Mercury (planet)", (
        "Mercury is the smallest planet of the Solar System and the one nearest to the Sun. It orbits the"
        " Sun once every 88 Earth days, the shortest year of all the planets.",
        "It has almost no atmosphere, so its surface swings from about 430 degrees Celsius by day to "
        "minus 180 at night. Its cratered surface resembles that of the Moon.",
    )),
    "mercury-element": ("Mercury (element)", (
        "Mercury is a chemical element with the symbol Hg. It is the only metal that is liquid at room "
        "temperature, and was historically called quicksilver.",
        "Because it expands evenly with heat and does not wet glass, it was long used in thermometers and"
        " barometers. Its vapour is toxic, and many countries now restrict its use.",
    )),
    "apple-fruit": ("Apples", (
        "The apple is the fruit of the apple tree, Malus domestica, first domesticated in Central Asia. "
        "Thousands of cultivars exist, bred for eating raw, cooking or making cider.",
        "Apple trees are propagated by grafting, because seeds do not grow true to the parent variety. "
        "Most need cross-pollination by bees from another cultivar to set fruit.",
    )),
    "apple-company": ("Apple Inc.", (
        "Apple Inc. is an American technology company founded by Steve Jobs, Steve Wozniak and Ronald "
        "Wayne in 1976 in Cupertino, California.",
        "It designs the iPhone smartphone, the Mac personal computers and the iPad tablet, and runs the "
        "App Store through which third-party software is sold.",
    )),
    "sourdough": ("Baking sourdough bread", (
        "Sourdough bread is leavened by a starter: a culture of wild yeasts and lactic acid bacteria "
        "living in a paste of flour and water.",
        "To keep a starter alive, discard part of it and feed it fresh flour and water every day at room "
        "temperature, or once a week if it is stored in the fridge.",
        "The long fermentation gives the loaf its tangy flavour and open crumb.",
    )),
    "espresso": ("Pulling an espresso shot", (
        "Espresso is brewed by forcing hot water through finely ground, tightly tamped coffee. A good "
        "machine pushes the water at about nine bars of pressure, at a temperature near 93 degrees "
        "Celsius.",
        "A double shot uses around 18 grams of coffee and should run for 25 to 30 seconds; the crema on "
        "top comes from emulsified oils and carbon dioxide.",
    )),
    "photosynthesis": ("Photosynthesis", (
        "Photosynthesis is the process by which plants, algae and some bacteria convert light energy into"
        " chemical energy.",
        "In the chloroplasts, chlorophyll absorbs sunlight, which drives the splitting of water and "
        "releases oxygen. The Calvin cycle then fixes carbon dioxide from the air into glucose.",
    )),
    "black-holes": ("Black holes", (
        "A black hole is a region of spacetime where gravity is so strong that nothing, not even light, "
        "can escape once it crosses the boundary called the event horizon.",
        "Stellar black holes form when massive stars collapse at the end of their lives; supermassive "
        "ones, millions of times the mass of the Sun, sit at the centres of galaxies.",
    )),
    "volcanoes": ("Volcanoes", (
        "A volcano is a rupture in the crust through which molten rock, ash and gases escape from a magma"
        " chamber below the surface.",
        "Most volcanoes lie along tectonic plate boundaries, such as the Pacific Ring of Fire, and others"
        " over hotspots such as Hawaii.",
    )),
    "tides": ("Tides", (
        "Tides are the regular rise and fall of the sea. They are caused mainly by the gravitational pull"
        " of the Moon, and to a lesser degree the Sun, on the rotating Earth.",
        "Most coasts see two high waters and two low waters each lunar day. Spring tides, with the "
        "largest range, happen when the Sun and Moon line up at new and full moon.",
    )),
    "rainbows": ("Rainbows", (
        "A rainbow appears when sunlight is refracted, reflected and dispersed inside raindrops, "
        "splitting white light into its spectrum of colours.",
        "You see one with the Sun behind you; the arc is centred on the point directly opposite the Sun, "
        "and a fainter secondary bow with reversed colours may appear outside it.",
    )),
    "honeybees": ("Honey bees", (
        "Honey bees live in colonies with one queen, thousands of female workers and a few male drones.",
        "A forager that finds flowers returns to the hive and performs the waggle dance: the angle of her"
        " run tells her sisters the direction of the food relative to the Sun, and its length tells the "
        "distance.",
    )),
    "octopus": ("The octopus", (
        "The octopus is a soft-bodied cephalopod with eight arms lined with suckers. It has three hearts:"
        " two pump blood through the gills and one through the rest of the body.",
        "Octopuses change colour and texture to hide, squirt ink to escape, and are among the most "
        "intelligent invertebrates, able to open jars and solve mazes.",
    )),
    "marathon": ("Training for a marathon", (
        "A marathon is a road race of 42.195 kilometres. Most training plans last 16 to 20 weeks and "
        "build weekly mileage gradually to avoid injury.",
        "The long run is the key workout: it grows each week until it peaks at about 30 to 35 kilometres,"
        " three weeks before race day, followed by a taper.",
    )),
    "chess-openings": ("Chess openings", (
        "The opening is the first phase of a chess game, in which players develop their pieces and fight "
        "for the centre.",
        "Popular openings include the Sicilian Defence, the Ruy Lopez and the Queen's Gambit, in which "
        "White offers a pawn to gain control of the centre.",
    )),
    "tcp-handshake": ("The TCP three-way handshake", (
        "Before TCP sends data it sets up a connection with a three-way handshake. The client sends a SYN"
        " segment with its initial sequence number.",
        "The server answers with SYN-ACK, acknowledging the client's number and choosing its own, and the"
        " client completes the handshake with an ACK. Both sides then know each other's sequence numbers.",
    )),
    "dns": ("How DNS resolves names", (
        "The Domain Name System translates human-readable domain names such as example.com into the IP "
        "addresses that computers use to reach each other.",
        "A resolver asks a root server, then the top-level domain server, then the authoritative name "
        "server for the domain, and caches the answer for the record's time to live.",
    )),
    "vaccines": ("How vaccines work", (
        "A vaccine exposes the immune system to a harmless piece or weakened form of a pathogen, such as "
        "a protein from its surface.",
        "B cells make antibodies against it and memory cells remain afterwards, so a later infection by "
        "the real germ is recognised and fought off quickly.",
    )),
    "diabetes": ("Type 1 diabetes", (
        "In type 1 diabetes the immune system destroys the beta cells of the pancreas, which make "
        "insulin, the hormone that lets cells take up glucose from the blood.",
        "Without insulin blood sugar rises dangerously, so people with type 1 diabetes must replace it "
        "with injections or an insulin pump for life.",
    )),
    "aqueducts": ("Roman aqueducts", (
        "The Romans built aqueducts to carry water from distant springs into their cities, for public "
        "baths, fountains and latrines.",
        "The channels relied on gravity alone, descending at a very gentle gradient over many kilometres;"
        " stone arches carried them across valleys, as at the Pont du Gard.",
    )),
    "printing-press": ("Gutenberg's printing press", (
        "Around 1440 Johannes Gutenberg, a goldsmith from Mainz, developed a printing press with movable "
        "metal type, oil-based ink and a screw press adapted from wine making.",
        "His Bible of about 1455 was the first major book printed in Europe with movable type, and "
        "printing spread across the continent within decades.",
    )),
    "french-revolution": ("The French Revolution", (
        "The French Revolution began in 1789 amid a financial crisis and widespread anger at the "
        "privileges of the nobility and clergy.",
        "On 14 July 1789 crowds in Paris stormed the Bastille, a fortress and prison; the day is now "
        "France's national holiday. The monarchy was abolished in 1792.",
    )),
    "bicycle-gears": ("Bicycle gears", (
        "A bicycle's gears change how far the bike travels for each turn of the pedals.",
        "For climbing a steep hill, shift to a low gear: the small chainring at the front and a large "
        "sprocket at the back, so pedalling is easier even though each stroke covers less ground.",
    )),
    "sailing": ("How sailboats sail upwind", (
        "A sailboat cannot sail straight into the wind, but it can sail at an angle of about 45 degrees "
        "to it. The sail works like a wing, producing lift from the air flowing across it.",
        "The keel resists sideways drift, so the lift drives the boat forward. To reach a point upwind "
        "the boat tacks, zigzagging from one side of the wind to the other.",
    )),
    "compost": ("Making compost", (
        "Compost is decomposed organic matter used to enrich garden soil.",
        "A good heap mixes green materials rich in nitrogen, such as vegetable scraps and grass "
        "clippings, with brown materials rich in carbon, such as dry leaves and cardboard. Keep out meat,"
        " dairy and oils, keep it moist and turn it to let air in.",
    )),
    "tomatoes": ("Growing tomatoes", (
        "Tomatoes need at least six to eight hours of sun a day and warm soil; plant them out after the "
        "last frost.",
        "Water deeply and regularly to prevent blossom end rot, and tie tall varieties to stakes or cages"
        " as the fruit develops.",
    )),
    "guitar-tuning": ("Tuning a guitar", (
        "In standard tuning the six strings of a guitar are tuned, from lowest to highest, to E, A, D, G,"
        " B and E.",
        "Turn the tuning pegs to tighten or loosen each string until it matches a tuner or a reference "
        "pitch.",
    )),
    "origami": ("Origami", (
        "Origami is the Japanese art of folding paper into shapes such as cranes, boxes and flowers, "
        "usually from a single square sheet without cuts or glue.",
        "Folding a thousand paper cranes, senbazuru, is said to grant a wish.",
    )),
    "aurora": ("The northern lights", (
        "Auroras are displays of coloured light in the sky near the polar regions, called the aurora "
        "borealis in the north.",
        "They appear when charged particles from the solar wind are guided by Earth's magnetic field into"
        " the upper atmosphere, where they excite oxygen atoms, which glow green and red, and nitrogen, "
        "which glows blue and purple.",
    )),
    "glaciers": ("Glaciers", (
        "A glacier is a persistent body of dense ice that moves slowly under its own weight.",
        "As it flows it plucks and grinds the rock beneath it, carving U-shaped valleys, cirques and "
        "fjords, and leaving moraines of debris where it melts.",
    )),
    "coral-reefs": ("Coral reefs", (
        "Coral reefs are built by colonies of tiny animals called polyps, which secrete skeletons of "
        "calcium carbonate and host symbiotic algae that feed them.",
        "When the sea becomes too warm, corals expel their algae and turn white. This bleaching, driven "
        "by marine heatwaves, can kill large parts of a reef.",
    )),
    "solar-panels": ("Solar panels", (
        "Solar panels are made of photovoltaic cells, usually of silicon.",
        "When sunlight strikes a cell, photons knock electrons loose in the semiconductor, and the "
        "junction between two layers drives them into a direct current; an inverter turns it into "
        "alternating current for the home.",
    )),
}

QUERIES: list[tuple[str, str]] = [
    ("which language uses indentation to define blocks of code", "python-language"),
    ("reptile that suffocates its victims", "python-snake"),
    ("most populous island in Indonesia", "java-island"),
    ("language whose programs compile to bytecode for a virtual machine", "java-language"),
    ("the smallest world orbiting our star", "mercury-planet"),
    ("why was quicksilver used in thermometers", "mercury-element"),
    ("who founded the company that makes the iPhone", "apple-company"),
    ("why are fruit trees grafted instead of grown from seed", "apple-fruit"),
    ("how do I keep my bread starter culture alive", "sourdough"),
    ("what pressure should an espresso machine brew at", "espresso"),
    ("how do plants turn sunlight into sugar", "photosynthesis"),
    ("what is the event horizon", "black-holes"),
    ("why does the ocean rise and fall twice a day", "tides"),
    ("how insects tell each other where nectar is", "honeybees"),
    ("how many hearts does an octopus have", "octopus"),
    ("how long should my longest run be before race day", "marathon"),
    ("what happens when a client opens a connection with SYN", "tcp-handshake"),
    ("how does my computer find the IP address of a website", "dns"),
    ("how does immunization protect against disease", "vaccines"),
    ("why do some people need insulin injections", "diabetes"),
    ("how did the Romans bring water to their cities", "aqueducts"),
    ("who invented movable type in Europe", "printing-press"),
    ("when was the Bastille stormed", "french-revolution"),
    ("making pedalling easier on a steep climb", "bicycle-gears"),
    ("can a boat move against the wind", "sailing"),
    ("what can I put in a compost pile", "compost"),
    ("what causes the colored lights in the polar sky", "aurora"),
    ("turning sunshine into power for a house", "solar-panels"),
    ("why warming oceans harm reef animals", "coral-reefs"),
    ("how do glaciers shape valleys", "glaciers"),
]
