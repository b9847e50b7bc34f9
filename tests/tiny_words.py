"""The words of the tiny test corpus (``conftest.write_corpus``), importable by test modules:
``from conftest import ...`` is ambiguous once several directories have a conftest.py."""

SUBJECTS = ["我们", "他", "老师", "学生", "公司", "政府", "记者", "农民", "工人", "科学家"]
VERBS = ["喜欢", "研究", "参观", "讨论", "建设", "保护", "发展", "支持", "学习", "介绍"]
OBJECTS = ["经济", "文化", "城市", "农村", "技术", "教育", "历史", "环境", "市场", "艺术"]
ADVERBS = ["今天", "昨天", "去年", "明年", "现在", "一直", "经常", "已经"]
ENGLISH = ["the market grew", "students read books", "the city is big", "we like music"]
