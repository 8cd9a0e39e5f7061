"""``connector sandbox``: a stand-in for the three CRMs, to try a config before a real portal.

It starts the Bitrix24, Pipedrive and 1C simulators on fixed local ports with the people,
pipelines, fields and documents that config.example.yaml and examples/ refer to (the users,
stages and deal fields each example names; the address field is ``UF_CRM_ADDRESS``), starts a
Telegram Bot API stand-in with the chats the examples post to, points the CRMs' webhooks at the
connector, and prints the environment variables the configs read.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from simulators.bitrix24 import Bitrix24Simulator
from simulators.faults import FaultKnobs
from simulators.onec.simulator import OneCSimulator, seed_demo
from simulators.pipedrive import PipedriveSimulator
from simulators.server import SimulatorServer
from simulators.telegram import TelegramSimulator

B24_APP_TOKEN = "sandbox-app-token"
PD_API_TOKEN = "sandbox-api-token"
PD_WEBHOOK_USER = "connector"
PD_WEBHOOK_PASSWORD = "sandbox-hook-password"
ONEC_USER, ONEC_PASSWORD = "Интеграция", "sandbox-password"
TG_BOT_TOKEN = "7000000000:AAH-sandbox-token-0123456789abcdef"
# The Telegram chats the examples post to, by the variable that names each.
TG_CHATS = {"TG_SHARED_CHAT_ID": "-1001000000001", "TG_CARE_CHAT_ID": "-1001000000002"}

# Bitrix24 employees: the ids config.example.yaml and examples/ name get these people.
B24_PEOPLE = {
    5: ("Сергей", "Власов", "Руководитель отдела продаж"),
    8: ("Татьяна", "Белова", "Бухгалтер"),
    9: ("Максим", "Егоров", "Юридический отдел"),
    7: ("Елена", "Орлова", "Руководитель сервисной службы"),
    11: ("Павел", "Зайцев", "Картограф"),
    12: ("Ольга", "Лебедева", "Картограф"),
    17: ("Иван", "Петров", "Капитан: Советский район"),
    19: ("Олег", "Смирнов", "Капитан: Вахитовский район"),
    23: ("Анна", "Кузнецова", "Сервис-инженер"),
    31: ("Рустам", "Галиев", "Капитан: 4201xx"),
    3: ("Андрей", "Соколов", "Директор"),
    6: ("Светлана", "Григорьева", "Ассистент менеджеров"),
    18: ("Кирилл", "Яковлев", "Менеджер по продажам"),
    20: ("Вера", "Полякова", "Аккаунт-менеджер"),
    21: ("Дарья", "Морозова", "Отдел заботы"),
    22: ("Никита", "Волков", "Отдел заботы"),
    29: ("Айдар", "Хасанов", "Капитан: Приволжский район"),
    37: ("Игорь", "Фёдоров", "Капитан: Зеленодольск"),
    41: ("Алина", "Сафина", "Агент"),
    42: ("Тимур", "Исмагилов", "Агент"),
    43: ("Марина", "Ершова", "Агент"),
}
# Bitrix24 deal stages the examples use besides the portal's defaults: (pipeline, stage, name, semantics).
B24_STAGES = (
    ("1", "C1:ROUTE", "Трасса и кабель", None),
    ("1", "C1:ENGINEERS", "Передано сервис-инженерам", None),
    ("1", "C1:VISIT", "Выезд", None),
    ("2", "C2:NEW", "Реестр клиентов", None),
    ("2", "C2:COLD", "Холодный звонок", None),
    ("2", "C2:LPR", "ЛПР найден", None),
    ("2", "C2:MEETING_SET", "Встреча назначена", None),
    ("2", "C2:PROPOSAL", "КП отправлено", None),
    ("2", "C2:MEETING", "Встреча проведена", None),
    ("2", "C2:PLAN", "План развития клиента", None),
    ("2", "C2:TENDER", "Тендер", None),
    ("2", "C2:CONTRACT", "Договор подготовлен", None),
    ("2", "C2:WON", "Договор подписан", "S"),
    ("2", "C2:LOSE", "Отказ", "F"),
)
# Deal user fields config.example.yaml and examples/ read or write, as declared in the portal's settings.
B24_DEAL_FIELDS = {
    "UF_CRM_ADDRESS": "Адрес подключения",
    "UF_CRM_SOURCE": "Источник заявки",
    "UF_CRM_TECH_RESULT": "Результат проверки техвозможности",
    "UF_CRM_VISIT_RESULT": "Результат выезда",
    "UF_CRM_AGREED_TIME": "Согласованное время",
    "UF_CRM_LOST_REASON": "Причина отказа",
    "UF_CRM_PAID": "Оплачено",
    "UF_CRM_INVOICE": "Счёт 1С",
    "UF_CRM_INVOICE_AMOUNT": "Сумма счёта",
    "UF_CRM_PAID_TOTAL": "Оплачено всего",
    "UF_CRM_PAID_IN_FULL": "Оплачено полностью",
    "UF_CRM_BONUS_AGENT": "Бонус агента",
    "UF_CRM_BONUS_SUPERVISOR": "Бонус руководителя",
    "UF_CRM_1C_REF": "Ссылка 1С",
    "UF_CRM_INN": "ИНН",
    "UF_CRM_COMPANY": "Компания",
    "UF_CRM_KPP": "КПП",
    "UF_CRM_PHONE": "Телефон",
    "UF_CRM_EMAIL": "E-mail",
    "UF_CRM_1C_ORDER": "Заказ 1С",
    "UF_CRM_1C_ORDER_STATUS": "Статус заказа 1С",
    "UF_CRM_PAYMENT_DUE": "Дата оплаты по отсрочке",
    "UF_CRM_CLOSING_DOCS": "Закрывающие документы в бухгалтерии",
    "UF_CRM_AGENT": "Агент",
    "UF_CRM_SUPERVISOR": "Руководитель агента",
    "UF_CRM_CARE_MANAGER": "Менеджер сопровождения",
    "UF_CRM_CARTOGRAPHER": "Картограф",
    "UF_CRM_COMPLAINT": "Претензия",
    "UF_CRM_COMPLAINT_ANSWERED": "Ответ на претензию дан",
    "UF_CRM_CONTACT_NAME": "Контактное лицо",
    "UF_CRM_DELIVERY_CITY": "Город доставки",
    "UF_CRM_DEMAND_TYPE": "Тип потребности",
    "UF_CRM_FIRST_CALL": "Первый звонок",
    "UF_CRM_OPERATOR": "Оператор",
    "UF_CRM_POSITION": "Должность контакта",
    "UF_CRM_SUBJECT": "Тема обращения",
    "UF_CRM_SHIP_BY": "Желаемая дата отгрузки",
    "UF_CRM_ACCOUNT_MANAGER": "Аккаунт-менеджер",
    "UF_CRM_GOODS_RECEIVED": "Товар на складе",
    "UF_CRM_FIRST_RESPONSE_AT": "Время первого ответа",
    "UF_CRM_STATUS_QUESTION": "Вопрос клиента о статусе",
    "UF_CRM_STATUS_ASKED_AT": "Время вопроса о статусе",
    "UF_CRM_STATUS_ANSWERED": "Ответ о статусе дан",
    "UF_CRM_STATUS_ANSWERED_AT": "Время ответа о статусе",
    "UF_CRM_TERRITORY": "Территория",
    "UF_CRM_PRODUCTION_DUE": "Срок производства",
    "UF_CRM_DUPLICATES": "Дубли",
    "UF_CRM_SUPPLIER_INVOICE": "Счёт поставщика",
    "UF_CRM_UPD_SIGNED": "УПД подписан",
    "UF_CRM_LPR_NAME": "ЛПР",
    "UF_CRM_LPR_PHONE": "Телефон ЛПР",
    "UF_CRM_CONTRACT": "Договор",
    "UF_CRM_PROPOSAL_SENT": "КП отправлено",
    "UF_CRM_PROTOCOL": "Протокол встречи",
    "UF_CRM_LPR_CALL_RESULT": "Итог звонка ЛПР",
}
# Pipedrive users the examples name, by id: the head of sales, the sales managers, customer care.
PIPEDRIVE_STAFF = {20: "Оксана Бондаренко", 21: "Дарья Мельник", 22: "Никита Ткаченко", 31: "Олег Шевченко",
                   32: "Ирина Коваленко"}  # fmt: skip
# Pipedrive custom deal fields of examples/b2b-sales-pipedrive.yaml, with the keys it names.
PIPEDRIVE_DEAL_FIELDS = {
    "a" * 36 + "0001": "Должность",
    "a" * 36 + "0002": "Телефон",
    "a" * 36 + "0003": "E-mail",
    "a" * 36 + "0004": "Город доставки",
    "a" * 36 + "0005": "Менеджер отдела заботы",
    "a" * 36 + "0006": "Новая продажа (отдел заботы)",
    "a" * 36 + "0007": "Сотрудничество в будущем",
}
PIPEDRIVE_PEOPLE = ("Мария Соколова", "Денис Волков", "Ирина Морозова", "Алексей Никитин")
SAMPLE_DEALS = (
    ("Подключение: ул. Академика Сахарова, 4", "Казань, Советский район, ул. Академика Сахарова, 4"),
    ("Подключение: ул. Баумана, 10", "Казань, Вахитовский район, ул. Баумана, 10"),
    ("Подключение: ул. Гвардейская, 8", "Казань, ул. Гвардейская, 8, 420111"),
)


class SandboxError(Exception):
    """The sandbox cannot start (a port is taken); the message is one line for the operator."""


@dataclass(frozen=True)
class SandboxOptions:
    """Where the simulators listen, where their webhooks go, and the faults they inject."""

    host: str = "127.0.0.1"
    bitrix24_port: int = 8081
    pipedrive_port: int = 8082
    onec_port: int = 8083
    telegram_port: int = 8084
    connector_url: str = "http://127.0.0.1:8080"
    sample_deals: bool = False
    error_rate: float = 0.0
    error_after_effect_rate: float = 0.0
    limit_rate: float = 0.0
    latency: float = 0.0
    timeout_rate: float = 0.0
    drop_webhook_rate: float = 0.0
    duplicate_webhooks: int = 1
    seed: int | None = None

    def faults(self) -> FaultKnobs:
        """A fresh set of knobs (each simulator rolls its own dice)."""
        return FaultKnobs(
            error_rate=self.error_rate,
            error_after_effect_rate=self.error_after_effect_rate,
            limit_rate=self.limit_rate,
            latency=(0.0, self.latency),
            timeout_rate=self.timeout_rate,
            drop_webhook_rate=self.drop_webhook_rate,
            duplicate_webhooks=self.duplicate_webhooks,
            seed=self.seed,
        )


class Sandbox:
    """The three simulators, filled in and serving; ``env`` is what the configs read."""

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        hooks = options.connector_url.rstrip("/")
        self.bitrix24 = Bitrix24Simulator(
            application_token=B24_APP_TOKEN,
            webhook_code="sandboxcode",
            domain="sandbox.bitrix24.ru",
            faults=options.faults(),
            handler_url=f"{hooks}/hooks/bitrix24/b24",
        )
        for user_id, (name, last_name, position) in sorted(B24_PEOPLE.items()):
            self.bitrix24.add_user(name, last_name, position=position, user_id=str(user_id))
        for field, label in B24_DEAL_FIELDS.items():
            self.bitrix24.add_deal_user_field(field, label)
        for category, stage, stage_name, semantics in B24_STAGES:
            self.bitrix24.add_stage(category, stage, stage_name, semantics)
        self.pipedrive = PipedriveSimulator(api_token=PD_API_TOKEN, company_domain="sandbox")
        self.pipedrive.faults = options.faults()
        for person in PIPEDRIVE_PEOPLE:
            self.pipedrive.add_user(person)
        for uid, person in PIPEDRIVE_STAFF.items():
            self.pipedrive.add_user(person, user_id=uid)
        for key, label in PIPEDRIVE_DEAL_FIELDS.items():
            self.pipedrive.add_deal_field(label, key=key)
        self.pipedrive.add_webhook(
            f"{hooks}/hooks/pipedrive/pd", http_auth_user=PD_WEBHOOK_USER, http_auth_password=PD_WEBHOOK_PASSWORD
        )
        self.onec = OneCSimulator(users={ONEC_USER: ONEC_PASSWORD}, faults=options.faults())
        seed_demo(self.onec)
        self.telegram = TelegramSimulator(TG_BOT_TOKEN, chats=tuple(TG_CHATS.values()), faults=options.faults())
        self._servers: list[SimulatorServer] = []
        self.env: dict[str, str] = {}

    def _serve(
        self,
        simulator: Bitrix24Simulator | PipedriveSimulator | OneCSimulator | TelegramSimulator,
        port: int,
        flag: str,
    ) -> str:
        try:
            if port:
                # werkzeug would print its own two lines and exit; say it in one, with the flag.
                with socket.create_server((self.options.host, port)):
                    pass
            server = simulator.serve(self.options.host, port)
        except OSError as exc:
            self.stop()
            raise SandboxError(
                f"cannot listen on {self.options.host}:{port} ({os.strerror(exc.errno) if exc.errno else exc}); "
                f"choose another port with {flag}"
            ) from None
        self._servers.append(server)
        return server.base_url

    def start(self) -> dict[str, str]:
        """Serve all three; returns the environment variables for the configs."""
        o = self.options
        b24 = self._serve(self.bitrix24, o.bitrix24_port, "--bitrix24-port")
        pd = self._serve(self.pipedrive, o.pipedrive_port, "--pipedrive-port")
        onec = self._serve(self.onec, o.onec_port, "--onec-port")
        telegram = self._serve(self.telegram, o.telegram_port, "--telegram-port")
        if o.sample_deals:
            for title, address in SAMPLE_DEALS:
                self.bitrix24.add_deal(
                    {"TITLE": title, "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "UF_CRM_ADDRESS": address}
                )
        self.env = {
            "B24_WEBHOOK_URL": b24 + self.bitrix24.webhook_base,
            "B24_APP_TOKEN": B24_APP_TOKEN,
            "PD_BASE_URL": pd,
            "PD_API_TOKEN": PD_API_TOKEN,
            "PD_WEBHOOK_USER": PD_WEBHOOK_USER,
            "PD_WEBHOOK_PASSWORD": PD_WEBHOOK_PASSWORD,
            "ONEC_URL": f"{onec}{self.onec.base_path}/",
            "ONEC_USER": ONEC_USER,
            "ONEC_PASSWORD": ONEC_PASSWORD,
            "TG_API_URL": telegram,
            "TG_BOT_TOKEN": TG_BOT_TOKEN,
            **TG_CHATS,
        }
        return self.env

    def stop(self) -> None:
        """Stop serving and join what the simulators run in the background."""
        for server in self._servers:
            server.stop()
        self._servers.clear()
        for simulator in (self.bitrix24, self.pipedrive, self.onec, self.telegram):
            simulator.close()


@contextmanager
def running_sandbox(options: SandboxOptions) -> Iterator[Sandbox]:
    """A started sandbox, stopped on the way out."""
    sandbox = Sandbox(options)
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def export_lines(env: dict[str, str], windows: bool = os.name == "nt") -> list[str]:
    """The variables as the shell of this platform sets them (PowerShell on Windows)."""
    if windows:
        return [f'$env:{name} = "{value}"' for name, value in env.items()]
    return [f"export {name}='{value}'" for name, value in env.items()]


def run_sandbox(options: SandboxOptions, stop: threading.Event | None = None) -> int:
    """Serve until Ctrl+C (or ``stop``), first printing what to export."""
    with running_sandbox(options) as sandbox:
        print("Sandbox CRMs are up. Export these, then run the connector against them:", flush=True)
        for line in export_lines(sandbox.env):
            print("  " + line, flush=True)
        print(
            f"Bitrix24 and Pipedrive send their webhooks to {options.connector_url}"
            " (hooks b24 and pd). Ctrl+C stops the sandbox.",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            (stop or threading.Event()).wait()
    return 0
